//! One job's cgroup directories: placement descriptors, measurements, the kill loop and
//! removal (also on drop, so error paths do not leak cgroups).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fs::{cgroup_tree, io_err, read_pids, Fs};
use super::{measure, v1, v2, AppliedLimits, CgroupError, CgroupKind, CgroupStats};

/// Rounds of "read `cgroup.procs`, SIGKILL every pid" before [`JobCgroup::kill_all`] gives up.
const KILL_ROUNDS: u32 = 200;
/// Pause between two kill rounds.
const KILL_PAUSE: Duration = Duration::from_millis(5);

/// One job's cgroup(s): one dir on v2; one per hierarchy on v1, plus the hybrid cgroup2 dir.
///
/// Removes its directories on drop (best effort) unless [`JobCgroup::remove`] was called.
#[derive(Debug)]
pub struct JobCgroup {
    fs: Fs,
    layout: Layout,
    procs_files: Vec<File>,
    procs_fds: Vec<RawFd>,
    /// The cgroup2 directory (v2, or the hybrid tree on v1), opened for `CLONE_INTO_CGROUP`.
    cgroup2_dir: Option<File>,
    /// `procs_fds` without the cgroup2 directory's (what a child created in it still writes).
    v1_procs_fds: Vec<RawFd>,
    pub(super) applied: AppliedLimits,
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

    /// The job's directory in a cgroup2 hierarchy, if it has one.
    fn cgroup2_dir(&self) -> Option<&Path> {
        match self {
            Layout::None => None,
            Layout::V2 { dir } => Some(dir),
            Layout::V1(d) => d.unified.as_deref(),
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
    pub(crate) fn new(fs: Fs, layout: Layout) -> JobCgroup {
        JobCgroup {
            fs,
            layout,
            procs_files: Vec::new(),
            procs_fds: Vec::new(),
            cgroup2_dir: None,
            v1_procs_fds: Vec::new(),
            applied: AppliedLimits::default(),
            removed: false,
        }
    }

    /// Opens `cgroup.procs` of every directory write-only (`O_CLOEXEC`) for `pre_exec`.
    /// Also opens the cgroup2 directory (`O_DIRECTORY | O_CLOEXEC`) for `clone3`.
    pub(crate) fn open_procs(&mut self) -> Result<(), CgroupError> {
        let cgroup2 = self.layout.cgroup2_dir().map(Path::to_path_buf);
        for dir in self.layout.dirs() {
            let path = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            self.procs_fds.push(file.as_raw_fd());
            if cgroup2.as_ref() != Some(&dir) {
                self.v1_procs_fds.push(file.as_raw_fd());
            }
            self.procs_files.push(file);
        }
        if let Some(dir) = cgroup2 {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(&dir)
                .map_err(|e| io_err(&dir, e))?;
            self.cgroup2_dir = Some(file);
        }
        Ok(())
    }

    /// Placement by `clone3(CLONE_INTO_CGROUP)`: the descriptor of the job's cgroup2
    /// directory, and the `cgroup.procs` descriptors of the other (v1) directories, which a
    /// child created in the cgroup2 directory still writes `"0"` to before exec. `None`
    /// without a cgroup2 directory. Valid while `self` lives.
    pub(crate) fn clone_into(&self) -> Option<(RawFd, &[RawFd])> {
        let dir = self.cgroup2_dir.as_ref()?;
        Some((dir.as_raw_fd(), &self.v1_procs_fds))
    }

    /// Which backend made this cgroup.
    pub fn kind(&self) -> CgroupKind {
        self.layout.kind()
    }

    /// Pre-opened write-only `cgroup.procs` descriptors of every directory. The spawner writes
    /// `"0"` to each in `pre_exec` (async-signal-safe: one `write(2)` per fd, no allocation).
    /// Valid while `self` lives.
    pub(crate) fn procs_fds(&self) -> &[RawFd] {
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
    pub(crate) fn need_bytes(&self) -> Option<u64> {
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
    pub(crate) fn kill_all(&self) -> Result<(), CgroupError> {
        kill_tree(&self.fs, &self.layout.dirs(), &self.layout.kill_files())
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
        self.v1_procs_fds.clear();
        self.procs_files.clear();
        self.cgroup2_dir = None;
        let mut first_err = None;
        if !self.is_empty() {
            if let Err(e) = self.kill_all() {
                first_err = Some(e);
            }
        }
        for dir in self.layout.dirs() {
            for d in cgroup_tree(&dir) {
                if let Err(e) = self.fs.rmdir_retry(&d) {
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

/// Kills everything in `dirs` (and their sub-cgroups) until they are empty, bounded.
fn kill_tree(fs: &Fs, dirs: &[PathBuf], kill_files: &[PathBuf]) -> Result<(), CgroupError> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let mut left: Vec<(PathBuf, Vec<i32>)> = Vec::new();
    for round in 0..KILL_ROUNDS {
        for kill in kill_files {
            // Missing on kernels < 5.14; the pid loop below still works.
            let _ = fs.write_file(kill, "1");
        }
        left.clear();
        for dir in dirs {
            for sub in cgroup_tree(dir) {
                let pids = read_pids(&sub)?;
                for &pid in &pids {
                    if pid > 1 && pid != me {
                        fs.kill(pid);
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
