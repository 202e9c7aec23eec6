//! Cgroup backends written directly against cgroupfs: v2 (a delegated subtree), v1 (including
//! hybrid hosts, where the controller-less cgroup2 tree is used for `cgroup.kill`) and none.
//!
//! The backend is chosen once at start-up ([`Backend::detect`] or [`Backend::from_kind`]) and
//! dispatches by enum, like youki's `AnyCgroupManager`. Each job gets a [`JobCgroup`] that owns
//! its directories, pre-opened `cgroup.procs` descriptors for race-free placement in `pre_exec`,
//! and removes everything again (also on drop, so error paths do not leak cgroups).
//!
//! Every call here is blocking file-system work (kill and rmdir loops sleep for a few
//! milliseconds); call it from `spawn_blocking` inside an async runtime.

mod measure;
mod none;
mod v1;
mod v2;

#[cfg(test)]
mod fakefs;

pub use none::NoneBackend;
pub use v1::V1Backend;
pub use v2::{MovePeers, V2Backend, V2Options};

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Rounds of "read `cgroup.procs`, SIGKILL every pid" before [`JobCgroup::kill_all`] gives up.
const KILL_ROUNDS: u32 = 200;
/// Pause between two kill rounds.
const KILL_PAUSE: Duration = Duration::from_millis(5);
/// Attempts of `rmdir` while the kernel still reports `EBUSY`.
const RMDIR_TRIES: u32 = 10;
/// Pause between two `rmdir` attempts.
const RMDIR_PAUSE: Duration = Duration::from_millis(20);
/// Longest accepted job cgroup name.
const MAX_NAME_LEN: usize = 64;
/// Name of the leaf the executor moves itself into on a delegated v2 subtree; never a job name.
pub const SUPERVISOR_DIR: &str = "supervisor";

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
    pub fn detect() -> Backend {
        Self::detect_with(&V2Options::default())
    }

    /// [`Backend::detect`] with the v2 options of `[executor]` (e.g. `v2_move_peers`).
    pub fn detect_with(v2: &V2Options) -> Backend {
        match read_proc_self() {
            Ok((cgroup, mountinfo)) => {
                Self::detect_at_with(Path::new("/"), &cgroup, &mountinfo, v2)
            }
            Err(e) => Backend::None(NoneBackend::new(format!(
                "no writable memory controller: {e}"
            ))),
        }
    }

    /// Like [`Backend::detect`], but with every mount point taken relative to `root` and the
    /// contents of `/proc/self/cgroup` and `/proc/self/mountinfo` given (for fake-fs tests).
    pub fn detect_at(root: &Path, proc_self_cgroup: &str, mountinfo: &str) -> Backend {
        Self::detect_at_with(root, proc_self_cgroup, mountinfo, &V2Options::default())
    }

    /// [`Backend::detect_at`] with explicit v2 options.
    pub fn detect_at_with(
        root: &Path,
        proc_self_cgroup: &str,
        mountinfo: &str,
        v2: &V2Options,
    ) -> Backend {
        let own = ProcCgroup::parse(proc_self_cgroup);
        let mounts = parse_mountinfo(mountinfo);
        let v2_reason = match V2Backend::detect_at(root, &own, &mounts, v2) {
            Ok(b) => return Backend::V2(b),
            Err(reason) => reason,
        };
        let v1_reason = match V1Backend::detect_at(root, &own, &mounts) {
            Ok(b) => return Backend::V1(b),
            Err(reason) => reason,
        };
        Backend::None(NoneBackend::new(format!(
            "no writable memory controller: cgroup v2: {v2_reason}; cgroup v1: {v1_reason}"
        )))
    }

    /// Forces one kind (config `cgroup = "v2" | "v1" | "none"`); `Unsupported` when it is not usable.
    pub fn from_kind(kind: CgroupKind) -> Result<Backend, CgroupError> {
        Self::from_kind_with(kind, &V2Options::default())
    }

    /// [`Backend::from_kind`] with the v2 options of `[executor]`.
    pub fn from_kind_with(kind: CgroupKind, v2: &V2Options) -> Result<Backend, CgroupError> {
        if kind == CgroupKind::None {
            return Ok(Backend::None(NoneBackend::disabled()));
        }
        let (cgroup, mountinfo) = read_proc_self().map_err(CgroupError::Unsupported)?;
        Self::from_kind_at_with(kind, Path::new("/"), &cgroup, &mountinfo, v2)
    }

    /// [`Backend::from_kind`] against a fake root (see [`Backend::detect_at`]).
    pub fn from_kind_at(
        kind: CgroupKind,
        root: &Path,
        proc_self_cgroup: &str,
        mountinfo: &str,
    ) -> Result<Backend, CgroupError> {
        Self::from_kind_at_with(
            kind,
            root,
            proc_self_cgroup,
            mountinfo,
            &V2Options::default(),
        )
    }

    /// [`Backend::from_kind_at`] with explicit v2 options.
    pub fn from_kind_at_with(
        kind: CgroupKind,
        root: &Path,
        proc_self_cgroup: &str,
        mountinfo: &str,
        v2: &V2Options,
    ) -> Result<Backend, CgroupError> {
        let own = ProcCgroup::parse(proc_self_cgroup);
        let mounts = parse_mountinfo(mountinfo);
        match kind {
            CgroupKind::V2 => V2Backend::detect_at(root, &own, &mounts, v2)
                .map(Backend::V2)
                .map_err(|r| CgroupError::Unsupported(format!("cgroup v2: {r}"))),
            CgroupKind::V1 => V1Backend::detect_at(root, &own, &mounts)
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
    pub fn why_none(&self) -> Option<&str> {
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

/// One job's cgroup(s): one dir on v2; one per hierarchy on v1, plus the hybrid cgroup2 dir.
///
/// Removes its directories on drop (best effort) unless [`JobCgroup::remove`] was called.
#[derive(Debug)]
pub struct JobCgroup {
    layout: Layout,
    procs_files: Vec<File>,
    procs_fds: Vec<RawFd>,
    applied: AppliedLimits,
    removed: bool,
}

/// The directories of one job cgroup, by backend.
#[derive(Debug)]
pub(crate) enum Layout {
    None,
    V2 { dir: PathBuf },
    V1(v1::V1Dirs),
}

impl Layout {
    fn kind(&self) -> CgroupKind {
        match self {
            Layout::None => CgroupKind::None,
            Layout::V2 { .. } => CgroupKind::V2,
            Layout::V1(_) => CgroupKind::V1,
        }
    }

    /// Every directory, in placement order (memory first), without duplicates.
    fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Layout::None => Vec::new(),
            Layout::V2 { dir } => vec![dir.clone()],
            Layout::V1(d) => d.all(),
        }
    }

    /// `cgroup.kill` files that kill the whole job atomically, where the kernel has them.
    fn kill_files(&self) -> Vec<PathBuf> {
        match self {
            Layout::None => Vec::new(),
            Layout::V2 { dir } => vec![dir.join("cgroup.kill")],
            Layout::V1(d) => d.unified.iter().map(|u| u.join("cgroup.kill")).collect(),
        }
    }

    fn stats(&self) -> CgroupStats {
        match self {
            Layout::None => CgroupStats::default(),
            Layout::V2 { dir } => v2::stats(dir),
            Layout::V1(d) => v1::stats(d),
        }
    }

    /// The memory directory and whether it is cgroup2.
    fn memory_dir(&self) -> Option<(&Path, bool)> {
        match self {
            Layout::None => None,
            Layout::V2 { dir } => Some((dir, true)),
            Layout::V1(d) => d.memory.as_deref().map(|m| (m, false)),
        }
    }
}

impl JobCgroup {
    pub(crate) fn new(layout: Layout) -> JobCgroup {
        JobCgroup {
            layout,
            procs_files: Vec::new(),
            procs_fds: Vec::new(),
            applied: AppliedLimits::default(),
            removed: false,
        }
    }

    /// Opens `cgroup.procs` of every directory write-only (`O_CLOEXEC`) for `pre_exec`.
    pub(crate) fn open_procs(&mut self) -> Result<(), CgroupError> {
        for dir in self.layout.dirs() {
            let path = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            self.procs_fds.push(file.as_raw_fd());
            self.procs_files.push(file);
        }
        Ok(())
    }

    /// Which backend made this cgroup.
    pub fn kind(&self) -> CgroupKind {
        self.layout.kind()
    }

    /// Pre-opened write-only `cgroup.procs` descriptors of every directory. The spawner writes
    /// `"0"` to each in `pre_exec` (async-signal-safe: one `write(2)` per fd, no allocation).
    /// Valid while `self` lives.
    pub fn procs_fds(&self) -> &[RawFd] {
        &self.procs_fds
    }

    /// The limits that were actually written.
    pub fn applied(&self) -> AppliedLimits {
        self.applied
    }

    /// Peak memory, CPU time and whether the OOM killer struck; unreadable values are `None`.
    pub fn stats(&self) -> CgroupStats {
        self.layout.stats()
    }

    /// Non-reclaimable memory in use now (anon + shmem, plus unreclaimable kernel memory on
    /// v2; never page cache), bytes; sample it while the job runs and keep the maximum.
    pub fn need_bytes(&self) -> Option<u64> {
        let (dir, v2) = self.layout.memory_dir()?;
        measure::need_bytes(dir, v2)
    }

    /// How many processes the kernel OOM killer killed in the job so far.
    pub fn oom_kills(&self) -> u64 {
        self.layout
            .memory_dir()
            .map_or(0, |(dir, v2)| measure::oom_kills(dir, v2))
    }

    /// Pids currently in the job (all directories and any sub-cgroups), sorted, deduplicated.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in self.layout.dirs() {
            for sub in cgroup_tree(&dir) {
                pids.extend(read_pids(&sub)?);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Kills every process in the job and waits (bounded) until the cgroup is empty:
    /// `cgroup.kill` where it exists, plus SIGKILL to every pid listed in `cgroup.procs`.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_tree(&self.layout.dirs(), &self.layout.kill_files())
    }

    /// True when no process is left in any directory (unreadable counts as not empty).
    pub fn is_empty(&self) -> bool {
        self.layout
            .dirs()
            .iter()
            .flat_map(|d| cgroup_tree(d))
            .all(|d| matches!(read_pids(&d), Ok(p) if p.is_empty()))
    }

    /// Directories owned by this job (placement order).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.layout.dirs()
    }

    /// Kills what is left and removes every directory (retrying while the kernel says `EBUSY`).
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.destroy()
    }

    fn destroy(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        self.procs_fds.clear();
        self.procs_files.clear();
        let mut first_err = None;
        if !self.is_empty() {
            if let Err(e) = self.kill_all() {
                first_err = Some(e);
            }
        }
        for dir in self.layout.dirs() {
            for d in cgroup_tree(&dir) {
                if let Err(e) = rmdir_retry(&d) {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

/// Checks a job cgroup name: `^[A-Za-z0-9_.-]{1,64}$`, not `.`, `..` or `supervisor`.
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
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

// ---------------------------------------------------------------------------------------------
// /proc parsing

fn read_proc_self() -> Result<(String, String), String> {
    let read = |p: &str| fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
    Ok((read("/proc/self/cgroup")?, read("/proc/self/mountinfo")?))
}

/// This process's cgroup membership, from `/proc/self/cgroup`.
#[derive(Debug, Default)]
pub(crate) struct ProcCgroup {
    /// Path in the unified hierarchy (`0::/path`).
    v2: Option<String>,
    /// v1 hierarchies: controllers (e.g. `cpu,cpuacct` split) and path.
    v1: Vec<(Vec<String>, String)>,
}

impl ProcCgroup {
    pub(crate) fn parse(text: &str) -> ProcCgroup {
        let mut out = ProcCgroup::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                out.v2 = Some(path.to_string());
            } else if !ctrls.is_empty() {
                let list = ctrls.split(',').map(str::to_string).collect();
                out.v1.push((list, path.to_string()));
            }
        }
        out
    }

    pub(crate) fn v2_path(&self) -> Option<&str> {
        self.v2.as_deref()
    }

    pub(crate) fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))
            .map(|(_, p)| p.as_str())
    }
}

/// One line of `/proc/self/mountinfo` (only what the backends need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Root of the mount within its filesystem (field 4).
    pub root: String,
    /// Mount point (field 5), unescaped.
    pub mount_point: String,
    /// Filesystem type, e.g. `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Superblock options, e.g. `rw`, `memory` or `cpu`, `cpuacct`.
    pub super_opts: Vec<String>,
    /// Mounted read-only (per-mount or superblock option `ro`).
    pub read_only: bool,
}

impl Mount {
    /// A cgroup v1 hierarchy that has `controller`.
    pub(crate) fn is_v1_with(&self, controller: &str) -> bool {
        self.fstype == "cgroup" && self.super_opts.iter().any(|o| o == controller)
    }
}

pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let mount_opts = fields[5];
    let super_opts: Vec<String> = fields[sep + 3].split(',').map(str::to_string).collect();
    let read_only =
        mount_opts.split(',').any(|o| o == "ro") || super_opts.iter().any(|o| o == "ro");
    Some(Mount {
        root: unescape_mount_field(fields[3]),
        mount_point: unescape_mount_field(fields[4]),
        fstype: fields[sep + 1].to_string(),
        super_opts,
        read_only,
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
fn unescape_mount_field(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount_point` (absolute, from mountinfo) under the test root `root`.
fn under_root(root: &Path, mount_point: &str) -> PathBuf {
    root.join(mount_point.trim_start_matches('/'))
}

/// Our cgroup path `own` relative to a mount whose root is `mount_root`, or `None` when the
/// cgroup is not visible through that mount (or the path tries to climb out of it).
fn relative_to_mount(own: &str, mount_root: &str) -> Option<String> {
    let rel = if mount_root == "/" {
        own
    } else if own == mount_root {
        "/"
    } else {
        own.strip_prefix(mount_root)
            .filter(|rest| rest.starts_with('/'))?
    };
    let normal = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    (normal && rel.starts_with('/')).then(|| rel.to_string())
}

/// A located cgroup directory of this process in some hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// The mount directory (under the test root).
    pub mount_dir: PathBuf,
    /// Our cgroup path relative to the mount, starting with `/`.
    pub rel: String,
    /// `mount_dir` + `rel`.
    pub dir: PathBuf,
    /// The mount is read-only.
    pub read_only: bool,
}

/// Finds our cgroup `own` in the first mount accepted by `pick` that shows it as a directory.
pub(crate) fn locate(
    root: &Path,
    mounts: &[Mount],
    own: &str,
    pick: impl Fn(&Mount) -> bool,
    what: &str,
) -> Result<Located, String> {
    let mut seen = Vec::new();
    for m in mounts.iter().filter(|m| pick(m)) {
        let mount_dir = under_root(root, &m.mount_point);
        let Some(rel) = relative_to_mount(own, &m.root) else {
            seen.push(format!(
                "{own} is outside the mount {} (root {})",
                mount_dir.display(),
                m.root
            ));
            continue;
        };
        let inner = rel.trim_start_matches('/');
        let dir = if inner.is_empty() {
            mount_dir.clone()
        } else {
            mount_dir.join(inner)
        };
        if dir.is_dir() {
            return Ok(Located {
                mount_dir,
                rel,
                dir,
                read_only: m.read_only,
            });
        }
        seen.push(format!("{} does not exist", dir.display()));
    }
    if seen.is_empty() {
        Err(format!("no {what} mounted"))
    } else {
        Err(seen.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// cgroupfs helpers

pub(crate) fn io_err(path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to an existing cgroupfs file (never creates one).
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<(), CgroupError> {
    #[cfg(test)]
    if let Some(result) = fakefs::intercept_write(path, contents) {
        return result.map_err(|e| io_err(path, e));
    }
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| io_err(path, e))
}

pub(crate) fn read_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| io_err(path, e))
}

/// A file holding a single number; `None` when missing, unreadable or not a number (`max`).
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` per line).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    keyed_value(&text, key)
}

pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Whitespace-separated words of a file such as `cgroup.controllers`.
pub(crate) fn read_words(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(read_string(path)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Creates a cgroup directory; `AlreadyExists` when it is there already.
pub(crate) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => {
            #[cfg(test)]
            fakefs::on_mkdir(path);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Removes an (empty) cgroup directory, retrying while the kernel reports `EBUSY`.
pub(crate) fn rmdir_retry(path: &Path) -> Result<(), CgroupError> {
    #[cfg(test)]
    fakefs::before_rmdir(path);
    let mut attempt = 1;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < RMDIR_TRIES => {
                attempt += 1;
                std::thread::sleep(RMDIR_PAUSE);
            }
            Err(e) => return Err(io_err(path, e)),
        }
    }
}

/// Pids in `dir/cgroup.procs`; empty when the directory is gone.
pub(crate) fn read_pids(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// `dir` and every cgroup below it, deepest first (the order `rmdir` needs).
pub(crate) fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect_tree(dir, &mut out, 0);
    out
}

fn collect_tree(dir: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    if depth < 32 {
        for sub in child_dirs(dir) {
            collect_tree(&sub, out, depth + 1);
        }
    }
    out.push(dir.to_path_buf());
}

/// Subdirectories (child cgroups) of `dir`; empty when unreadable.
pub(crate) fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Names of the child cgroups of `dir`.
pub(crate) fn child_names(dir: &Path) -> Vec<String> {
    child_dirs(dir)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

fn send_sigkill(pid: i32) {
    #[cfg(test)]
    if fakefs::intercept_kill(pid) {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; ESRCH for a gone pid is fine.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Kills everything in `dirs` (and their sub-cgroups) until they are empty, bounded.
pub(crate) fn kill_tree(dirs: &[PathBuf], kill_files: &[PathBuf]) -> Result<(), CgroupError> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let mut left: Vec<(PathBuf, Vec<i32>)> = Vec::new();
    for round in 0..KILL_ROUNDS {
        for kill in kill_files {
            // Missing on kernels < 5.14; the pid loop below still works.
            let _ = write_file(kill, "1");
        }
        left.clear();
        for dir in dirs {
            for sub in cgroup_tree(dir) {
                let pids = read_pids(&sub)?;
                for &pid in &pids {
                    if pid > 1 && pid != me {
                        send_sigkill(pid);
                    }
                }
                if !pids.is_empty() {
                    left.push((sub, pids));
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if round + 1 < KILL_ROUNDS {
            std::thread::sleep(KILL_PAUSE);
        }
    }
    let (path, pids) = left.swap_remove(0);
    Err(CgroupError::KillTimeout {
        path,
        pids,
        rounds: KILL_ROUNDS,
    })
}

/// `access(path, W_OK)`: whether this process may write `path`.
pub(crate) fn writable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_serialises_lowercase() {
        for (k, s) in [
            (CgroupKind::V2, "v2"),
            (CgroupKind::V1, "v1"),
            (CgroupKind::None, "none"),
        ] {
            assert_eq!(k.to_string(), s);
            assert_eq!(k.as_str(), s);
        }
        // serde attribute check without a JSON dependency: the derive uses these names.
        let t: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            serde::de::IntoDeserializer::into_deserializer("v1");
        assert_eq!(CgroupKind::deserialize(t).ok(), Some(CgroupKind::V1));
    }

    #[test]
    fn autotraits() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Backend>();
        send_sync::<JobCgroup>();
        send_sync::<CgroupError>();
    }

    #[test]
    fn names() {
        for ok in ["a", "job-1", "presize-abc_DEF.1", &"x".repeat(64), "..."] {
            assert!(validate_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/a",
            "a b",
            "a\n",
            &"x".repeat(65),
            "supervisor",
        ] {
            assert!(
                matches!(validate_name(bad), Err(CgroupError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mountinfo_lines() {
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,relatime shared:16 master:3 - cgroup cgroup rw,memory
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct ro,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 /docker/x /mnt/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate
garbage line
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert!(m[0].is_v1_with("memory"));
        assert!(!m[0].read_only);
        assert!(m[1].is_v1_with("cpuacct") && m[1].is_v1_with("cpu"));
        assert!(m[1].read_only);
        assert_eq!(m[2].fstype, "cgroup2");
        assert_eq!(m[2].mount_point, "/mnt/with space");
        assert_eq!(m[2].root, "/docker/x");
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn proc_self_cgroup() {
        let p = ProcCgroup::parse(
            "9:name=systemd:/\n4:memory:/process_api/e3\n2:cpu,cpuacct:/a:b\n0::/x/y\n",
        );
        assert_eq!(p.v1_path("memory"), Some("/process_api/e3"));
        assert_eq!(p.v1_path("cpuacct"), Some("/a:b"));
        assert_eq!(p.v1_path("pids"), None);
        assert_eq!(p.v2_path(), Some("/x/y"));
        assert_eq!(ProcCgroup::parse("").v2_path(), None);
    }

    #[test]
    fn paths_relative_to_mounts() {
        assert_eq!(relative_to_mount("/a/b", "/").as_deref(), Some("/a/b"));
        assert_eq!(relative_to_mount("/a/b", "/a").as_deref(), Some("/b"));
        assert_eq!(relative_to_mount("/a", "/a").as_deref(), Some("/"));
        assert_eq!(relative_to_mount("/ab", "/a"), None);
        assert_eq!(relative_to_mount("/../../x", "/"), None);
        assert_eq!(relative_to_mount("/a/./b", "/"), Some("/a/./b".to_string()));
        assert_eq!(relative_to_mount("relative", "/"), None);
    }

    #[test]
    fn keyed_files() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(t, "oom_kill"), Some(3));
        assert_eq!(keyed_value(t, "oom"), None);
        assert_eq!(keyed_value("usage_usec x\n", "usage_usec"), None);
    }

    #[test]
    fn detect_never_panics_on_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Backend::detect_at(dir.path(), "garbage\n::\n0::\n", "x\n- - -\n");
        assert_eq!(b.kind(), CgroupKind::None);
        assert!(b
            .why_none()
            .unwrap_or_default()
            .starts_with("no writable memory controller"));
    }

    #[test]
    fn errors_name_the_path() {
        let e = rmdir_retry(Path::new("/proc/self/definitely-not-a-dir/x"));
        assert!(e.is_ok(), "ENOENT counts as removed");
        let e = write_file(Path::new("/nonexistent-presize/memory.max"), "1");
        let msg = e
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.starts_with("/nonexistent-presize/memory.max: "),
            "{msg}"
        );
    }
}

/// Tests against the real kernel; they need root and a cgroup backend that enforces memory.
/// Set `PRESIZE_REQUIRE_CGROUP_TESTS=1` (CI) to turn a skip into a failure.
#[cfg(test)]
mod kernel_tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    const MIB: u64 = 1 << 20;

    fn can_run() -> Option<Backend> {
        let why = if unsafe { libc::geteuid() } != 0 {
            "not root".to_string()
        } else {
            let b = Backend::detect();
            match b.why_none() {
                None => return Some(b),
                Some(r) => r.to_string(),
            }
        };
        if std::env::var_os("PRESIZE_REQUIRE_CGROUP_TESTS").is_some_and(|v| v == "1") {
            panic!("real-kernel cgroup test cannot run: {why}");
        }
        eprintln!("skipped: real-kernel cgroup test: {why}");
        None
    }

    fn name(test: &str) -> String {
        format!("presize-test-{test}-{}", std::process::id())
    }

    fn python() -> &'static str {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    /// Spawns `cmd` placed into `job` by `pre_exec` (race-free), in its own process group.
    fn spawn_in(job: &JobCgroup, cmd: &mut Command) -> Child {
        let fds: Vec<RawFd> = job.procs_fds().to_vec();
        // SAFETY: the closure only calls write(2) on fds that stay open in the parent until
        // the child has exec'd (JobCgroup outlives the spawn); no allocation after fork.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.process_group(0).spawn().expect("spawn")
    }

    /// The process is gone or a zombie (reparented to an init that has not reaped it yet).
    fn gone_or_zombie(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
        }
    }

    fn wait_for_pids(job: &JobCgroup, n: usize) -> Vec<i32> {
        let start = Instant::now();
        loop {
            let pids = job.pids().expect("pids");
            if pids.len() >= n || start.elapsed() > Duration::from_secs(5) {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn oom_kill_at_cap() {
        let Some(b) = can_run() else { return };
        let limits = CgroupLimits {
            memory_bytes: Some(100 * MIB),
            pids_max: None,
        };
        let job = b.create(&name("oom"), &limits).expect("create");
        assert!(job.applied().memory_bytes.is_some());
        let script = "b=bytearray(300*1024*1024); b[::4096]=b'x'*len(b[::4096])";
        let status = spawn_in(
            &job,
            Command::new(python())
                .args(["-c", script])
                .stderr(Stdio::null()),
        )
        .wait()
        .expect("wait");
        let s = job.stats();
        eprintln!(
            "oom: status={status:?} peak={:?} MiB oom_killed={} cpu_ns={:?} applied={:?}",
            s.peak_bytes.map(|p| p as f64 / MIB as f64),
            s.oom_killed,
            s.cpu_ns,
            job.applied()
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(s.oom_killed);
        let peak = s.peak_bytes.expect("peak measured");
        assert!((90 * MIB..=101 * MIB).contains(&peak), "peak {peak}");
        job.remove().expect("remove");
    }

    #[test]
    fn job_under_cap_runs_and_is_measured() {
        let Some(b) = can_run() else { return };
        let limits = CgroupLimits {
            memory_bytes: Some(200 * MIB),
            pids_max: Some(64),
        };
        let job = b.create(&name("ok"), &limits).expect("create");
        let script =
            "b=bytearray(50*1024*1024); b[::4096]=b'x'*len(b[::4096]); sum(range(3*10**6))";
        let status = spawn_in(&job, Command::new(python()).args(["-c", script]))
            .wait()
            .expect("wait");
        let s = job.stats();
        eprintln!(
            "ok: status={status:?} peak={:?} MiB oom_killed={} cpu={:?} s",
            s.peak_bytes.map(|p| p as f64 / MIB as f64),
            s.oom_killed,
            s.cpu_ns.map(|c| c as f64 / 1e9)
        );
        assert!(status.success(), "{status:?}");
        assert!(!s.oom_killed);
        assert!(s.peak_bytes.expect("peak") >= 50 * MIB);
        assert!(s.peak_bytes.expect("peak") < 200 * MIB);
        assert!(s.cpu_ns.expect("cpu") > 0);
        assert!(job.is_empty());
        let paths = job.paths();
        job.remove().expect("remove");
        assert!(paths.iter().all(|p| !p.exists()));
    }

    #[test]
    fn kill_all_catches_setsid_escapee() {
        let Some(b) = can_run() else { return };
        let job = b
            .create(&name("setsid"), &CgroupLimits::default())
            .expect("create");
        let mut child = spawn_in(
            &job,
            Command::new("sh").args(["-c", "setsid sleep 1000 & sleep 1000"]),
        );
        // Wait until the escapee has really called setsid(2) (it is briefly a plain fork).
        let child_sid = unsafe { libc::getsid(child.id() as i32) };
        let start = Instant::now();
        let (pids, sessions) = loop {
            let pids = job.pids().expect("pids");
            let sessions: Vec<i32> = pids.iter().map(|&p| unsafe { libc::getsid(p) }).collect();
            let escaped = sessions.iter().any(|&s| s > 0 && s != child_sid);
            if (pids.len() >= 2 && escaped) || start.elapsed() > Duration::from_secs(5) {
                break (pids, sessions);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        eprintln!(
            "setsid: pids={pids:?} sessions={sessions:?} (job session {child_sid}) dirs={}",
            job.paths().len()
        );
        assert!(
            sessions.iter().any(|&s| s > 0 && s != child_sid),
            "no process left the session: {sessions:?}"
        );
        job.kill_all().expect("kill_all");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        for &pid in &pids {
            assert!(gone_or_zombie(pid), "pid {pid} survived");
        }
        assert!(job.is_empty());
        let paths = job.paths();
        job.remove().expect("remove");
        for p in paths {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }

    #[test]
    fn pids_max_stops_fork_bomb() {
        let Some(b) = can_run() else { return };
        let limits = CgroupLimits {
            memory_bytes: Some(256 * MIB),
            pids_max: Some(32),
        };
        let job = b.create(&name("forkbomb"), &limits).expect("create");
        if job.applied().pids_max.is_none() {
            eprintln!("skipped: no pids controller");
            return;
        }
        let pids_dir = job
            .paths()
            .into_iter()
            .find(|p| p.join("pids.current").exists())
            .expect("pids dir");
        // stderr to a file: the surviving sleeps would keep a pipe open.
        let err_file = tempfile::NamedTempFile::new().expect("tempfile");
        let stderr = err_file.reopen().expect("reopen");
        let script = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait";
        let mut child = spawn_in(&job, Command::new("sh").args(["-c", script]).stderr(stderr));
        let mut max_seen = 0u64;
        let start = Instant::now();
        let status = loop {
            max_seen = max_seen.max(read_u64(&pids_dir.join("pids.current")).unwrap_or(0));
            if let Some(st) = child.try_wait().expect("try_wait") {
                break Some(st);
            }
            if start.elapsed() > Duration::from_secs(20) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let left = job.pids().expect("pids").len();
        let events = fs::read_to_string(pids_dir.join("pids.events")).unwrap_or_default();
        let stderr_text = fs::read_to_string(err_file.path()).unwrap_or_default();
        eprintln!(
            "forkbomb: status={status:?} max pids.current={max_seen} procs left={left} \
             pids.events={:?} stderr={:?}",
            events.trim(),
            stderr_text.lines().next()
        );
        job.kill_all().expect("kill_all");
        if status.is_none() {
            let _ = child.wait();
        }
        assert!(
            stderr_text.contains("Cannot fork")
                || stderr_text.contains("Resource temporarily unavailable"),
            "{stderr_text}"
        );
        assert!(max_seen <= 32, "{max_seen}");
        assert!(left <= 32, "{left}");
        assert!(job.is_empty());
        job.remove().expect("remove");
        assert!(!pids_dir.exists());
    }

    /// Removes every `prefix*` cgroup on drop, even when the test fails.
    struct StaleGuard<'a>(&'a Backend, String);

    impl Drop for StaleGuard<'_> {
        fn drop(&mut self) {
            self.0.cleanup_stale(&self.1, &|_| false);
        }
    }

    #[test]
    fn cleanup_stale_kills_leftovers_but_keeps_live() {
        let Some(b) = can_run() else { return };
        let prefix = format!("presize-test-stale-{}-", std::process::id());
        let guard = StaleGuard(&b, prefix.clone());
        let limits = CgroupLimits {
            memory_bytes: Some(64 * MIB),
            pids_max: Some(16),
        };
        let dead = b.create(&format!("{prefix}dead"), &limits).expect("create");
        let live = b.create(&format!("{prefix}live"), &limits).expect("create");
        let mut dead_child = spawn_in(&dead, Command::new("sleep").arg("1000"));
        let mut live_child = spawn_in(&live, Command::new("sleep").arg("1000"));
        wait_for_pids(&dead, 1);
        wait_for_pids(&live, 1);
        let (dead_paths, live_paths) = (dead.paths(), live.paths());
        // Simulate a crashed executor: nobody removes them.
        std::mem::forget(dead);
        std::mem::forget(live);

        let removed = b.cleanup_stale(&prefix, &|n| n.ends_with("-live"));
        eprintln!("cleanup_stale: removed={removed:?}");
        assert_eq!(removed, vec![format!("{prefix}dead")]);
        assert_eq!(
            dead_child.wait().expect("wait").signal(),
            Some(libc::SIGKILL)
        );
        assert!(dead_paths.iter().all(|p| !p.exists()));
        assert!(live_paths.iter().all(|p| p.is_dir()));
        assert!(
            live_child.try_wait().expect("try_wait").is_none(),
            "live job untouched"
        );

        drop(guard);
        assert_eq!(
            live_child.wait().expect("wait").signal(),
            Some(libc::SIGKILL)
        );
        assert!(live_paths.iter().all(|p| !p.exists()));
    }

    #[test]
    fn drop_without_remove_cleans_up() {
        let Some(b) = can_run() else { return };
        let job = b
            .create(&name("drop"), &CgroupLimits::default())
            .expect("create");
        let mut child = spawn_in(&job, Command::new("sleep").arg("1000"));
        wait_for_pids(&job, 1);
        let paths = job.paths();
        assert_eq!(job.procs_fds().len(), paths.len());
        drop(job);
        assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
        assert!(paths.iter().all(|p| !p.exists()));
    }
}
