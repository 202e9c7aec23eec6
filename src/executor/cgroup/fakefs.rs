//! Test helper: a fake cgroupfs in a temp dir that acts like the kernel where the backends
//! depend on it.
//!
//! A backend detected through [`FakeCgroupFs::detect_at`] (or the other entry points here)
//! reaches cgroupfs through the fake's [`CgroupOps`]: `mkdir` populates new directories with
//! the interface files the kernel would create, writes to `cgroup.procs`,
//! `cgroup.subtree_control` and `cgroup.kill` follow kernel rules (moves, `EBUSY` for the
//! no-internal-process rule, kill empties the tree), `rmdir` drops the regular files first, and
//! SIGKILL is never sent: the pid is recorded and removed from every `cgroup.procs` instead.
//! Everything else is plain files the test writes and reads.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tempfile::TempDir;

use super::fs::{CgroupOps, Fs};
use super::{Backend, CgroupError, CgroupKind, V2Options};

/// Kernel order of v2 controllers in `cgroup.subtree_control`.
const V2_ORDER: [&str; 8] = [
    "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
];

#[derive(Debug, Clone)]
enum Hier {
    V2,
    V1(Vec<String>),
}

/// Kernel features of the fake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// v2: `memory.swap.max` exists.
    pub swap: bool,
    /// v2: `memory.peak` exists (kernel >= 5.19).
    pub memory_peak: bool,
    /// v1: `memory.memsw.limit_in_bytes` exists (swap accounting on).
    pub memsw: bool,
    /// v1: writing `memory.memsw.limit_in_bytes` fails with `EINVAL`.
    pub memsw_refuses: bool,
    /// `cgroup.kill` exists (kernel >= 5.14).
    pub cgroup_kill: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            swap: true,
            memory_peak: true,
            memsw: true,
            memsw_refuses: false,
            cgroup_kill: true,
        }
    }
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    mounts: Vec<(PathBuf, Hier)>,
    options: Options,
    kills: Vec<i32>,
    kill_writes: Vec<PathBuf>,
    /// (parent, child): when `parent` is moved, `child` appears in the cgroup it left (a fork
    /// that raced with the move). Used once.
    fork_on_move: Vec<(i32, i32)>,
    /// (pid, errno): moving `pid` fails with `errno`.
    refuse_move: Vec<(i32, i32)>,
}

/// A fake cgroupfs root in a temp dir (removed on drop).
pub(crate) struct FakeCgroupFs {
    dir: TempDir,
    state: Arc<Mutex<State>>,
}

/// The [`CgroupOps`] of a [`FakeCgroupFs`].
#[derive(Debug)]
struct FakeOps(Arc<Mutex<State>>);

impl FakeCgroupFs {
    /// An empty root with default [`Options`].
    pub(crate) fn new() -> FakeCgroupFs {
        Self::with_options(Options::default())
    }

    pub(crate) fn with_options(options: Options) -> FakeCgroupFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(Mutex::new(State {
            root: dir.path().to_path_buf(),
            mounts: Vec::new(),
            options,
            kills: Vec::new(),
            kill_writes: Vec::new(),
            fork_on_move: Vec::new(),
            refuse_move: Vec::new(),
        }));
        FakeCgroupFs { dir, state }
    }

    /// The cgroupfs handle a backend under test uses.
    pub(crate) fn fs(&self) -> Fs {
        Fs::new(Arc::new(FakeOps(Arc::clone(&self.state))))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `Backend::detect` on this fake, with `/proc/self/cgroup` and mountinfo given.
    pub(crate) fn detect_at(&self, proc_self_cgroup: &str, mountinfo: &str) -> Backend {
        self.detect_at_with(proc_self_cgroup, mountinfo, &V2Options::default())
    }

    /// [`FakeCgroupFs::detect_at`] with explicit v2 options.
    pub(crate) fn detect_at_with(
        &self,
        proc_self_cgroup: &str,
        mountinfo: &str,
        v2: &V2Options,
    ) -> Backend {
        Backend::detect_in(&self.fs(), self.root(), proc_self_cgroup, mountinfo, v2)
    }

    /// `Backend::from_kind` (a forced kind) on this fake.
    pub(crate) fn forced(
        &self,
        kind: CgroupKind,
        proc_self_cgroup: &str,
        mountinfo: &str,
    ) -> Result<Backend, CgroupError> {
        Backend::from_kind_in(
            &self.fs(),
            kind,
            self.root(),
            proc_self_cgroup,
            mountinfo,
            &V2Options::default(),
        )
    }

    /// What the kernel does after a `mkdir` in a cgroup mount (for a directory the test made).
    pub(crate) fn on_mkdir(&self, path: &Path) {
        on_mkdir(&mut self.lock(), path);
    }

    /// The directory to pass to `Backend::detect_at`.
    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `mount_point` (absolute) under the fake root.
    pub(crate) fn path(&self, mount_point: &str) -> PathBuf {
        self.root().join(mount_point.trim_start_matches('/'))
    }

    /// Mounts a cgroup2 tree whose root offers `controllers`.
    pub(crate) fn mount_v2(&self, mount_point: &str, controllers: &[&str]) -> PathBuf {
        let dir = self.path(mount_point);
        fs::create_dir_all(&dir).expect("mount dir");
        self.lock().mounts.push((dir.clone(), Hier::V2));
        populate_root_v2(&dir, controllers);
        dir
    }

    /// Mounts a cgroup v1 hierarchy with `controllers`.
    pub(crate) fn mount_v1(&self, mount_point: &str, controllers: &[&str]) -> PathBuf {
        let dir = self.path(mount_point);
        fs::create_dir_all(&dir).expect("mount dir");
        let ctrls: Vec<String> = controllers.iter().map(|c| c.to_string()).collect();
        self.lock().mounts.push((dir.clone(), Hier::V1(ctrls)));
        let options = self.lock().options;
        populate(
            &dir,
            &Hier::V1(controllers.iter().map(|c| c.to_string()).collect()),
            &options,
            &[],
        );
        dir
    }

    /// Creates the cgroup `rel` (and its parents) below the mount at `mount_dir`, as the kernel
    /// (or systemd) would have.
    pub(crate) fn mkdir_p(&self, mount_dir: &Path, rel: &str) -> PathBuf {
        let mut dir = mount_dir.to_path_buf();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).expect("mkdir");
                self.on_mkdir(&dir);
            }
        }
        dir
    }

    pub(crate) fn write(&self, path: &Path, contents: &str) {
        fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    pub(crate) fn read(&self, path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Pids the code tried to SIGKILL.
    pub(crate) fn kills(&self) -> Vec<i32> {
        self.lock().kills.clone()
    }

    /// When `parent` is next moved, `child` appears in the cgroup `parent` left.
    pub(crate) fn fork_on_move(&self, parent: i32, child: i32) {
        self.lock().fork_on_move.push((parent, child));
    }

    /// Moving `pid` fails with `errno` (e.g. `ESRCH`: it exited; `EACCES`: another user's).
    pub(crate) fn refuse_move(&self, pid: i32, errno: i32) {
        self.lock().refuse_move.push((pid, errno));
    }

    /// `cgroup.kill` files written with "1".
    pub(crate) fn kill_writes(&self) -> Vec<PathBuf> {
        self.lock().kill_writes.clone()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CgroupOps for FakeOps {
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        assert!(
            path.starts_with(&s.root),
            "{} outside the fake",
            path.display()
        );
        match intercept_write(&mut s, path, contents) {
            Some(result) => result,
            None => fs::write(path, contents),
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.0);
        assert!(
            path.starts_with(&s.root),
            "{} outside the fake",
            path.display()
        );
        fs::create_dir(path)?;
        on_mkdir(&mut s, path);
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let s = lock(&self.0);
        assert!(
            path.starts_with(&s.root),
            "{} outside the fake",
            path.display()
        );
        before_rmdir(path);
        fs::remove_dir(path)
    }

    fn kill(&self, pid: i32) {
        let mut s = lock(&self.0);
        s.kills.push(pid);
        let root = s.root.clone();
        remove_pid_below(&root, pid);
    }
}

fn mount_of<'a>(s: &'a State, path: &Path) -> Option<&'a (PathBuf, Hier)> {
    s.mounts
        .iter()
        .filter(|(m, _)| path.starts_with(m))
        .max_by_key(|(m, _)| m.as_os_str().len())
}

fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn put(dir: &Path, name: &str, contents: &str) {
    fs::write(dir.join(name), contents).expect("fake file");
}

fn populate_root_v2(dir: &Path, controllers: &[&str]) {
    put(
        dir,
        "cgroup.controllers",
        &format!("{}\n", controllers.join(" ")),
    );
    put(dir, "cgroup.subtree_control", "\n");
    put(dir, "cgroup.procs", "");
    put(dir, "cgroup.threads", "");
    put(
        dir,
        "cpu.stat",
        "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    );
}

/// The files the kernel creates in a new cgroup directory.
fn populate(dir: &Path, hier: &Hier, o: &Options, parent_subtree: &[String]) {
    put(dir, "cgroup.procs", "");
    match hier {
        Hier::V2 => {
            let has = |c: &str| parent_subtree.iter().any(|x| x == c);
            put(
                dir,
                "cgroup.controllers",
                &format!("{}\n", parent_subtree.join(" ")),
            );
            put(dir, "cgroup.subtree_control", "\n");
            put(dir, "cgroup.threads", "");
            put(dir, "cgroup.type", "domain\n");
            put(dir, "cgroup.events", "populated 0\nfrozen 0\n");
            put(dir, "cgroup.freeze", "0\n");
            if o.cgroup_kill {
                put(dir, "cgroup.kill", "");
            }
            put(
                dir,
                "cpu.stat",
                "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
            );
            if has("memory") {
                put(dir, "memory.max", "max\n");
                put(dir, "memory.high", "max\n");
                put(dir, "memory.current", "0\n");
                put(dir, "memory.oom.group", "0\n");
                put(
                    dir,
                    "memory.events",
                    "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
                );
                if o.memory_peak {
                    put(dir, "memory.peak", "0\n");
                }
                if o.swap {
                    put(dir, "memory.swap.max", "max\n");
                }
            }
            if has("pids") {
                put(dir, "pids.max", "max\n");
                put(dir, "pids.current", "0\n");
            }
            if has("cpu") {
                put(dir, "cpu.max", "max 100000\n");
                put(dir, "cpu.weight", "100\n");
            }
        }
        Hier::V1(ctrls) => {
            let has = |c: &str| ctrls.iter().any(|x| x == c);
            put(dir, "tasks", "");
            put(dir, "notify_on_release", "0\n");
            put(dir, "cgroup.clone_children", "0\n");
            if has("memory") {
                put(dir, "memory.limit_in_bytes", "9223372036854771712\n");
                put(dir, "memory.usage_in_bytes", "0\n");
                put(dir, "memory.max_usage_in_bytes", "0\n");
                put(dir, "memory.failcnt", "0\n");
                put(
                    dir,
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                );
                if o.memsw {
                    put(dir, "memory.memsw.limit_in_bytes", "9223372036854771712\n");
                }
            }
            if has("cpuacct") {
                put(dir, "cpuacct.usage", "0\n");
            }
            if has("pids") {
                put(dir, "pids.max", "max\n");
                put(dir, "pids.current", "0\n");
            }
        }
    }
}

/// After a successful `mkdir`: the interface files the kernel creates.
fn on_mkdir(s: &mut State, path: &Path) {
    let Some((_, hier)) = mount_of(s, path) else {
        return;
    };
    let parent_subtree = path
        .parent()
        .map(|p| words(&p.join("cgroup.subtree_control")))
        .unwrap_or_default();
    populate(path, hier, &s.options, &parent_subtree);
}

/// Before `rmdir`: drop the interface files of an empty cgroup.
fn before_rmdir(path: &Path) {
    if !words(&path.join("cgroup.procs")).is_empty() {
        return; // the kernel refuses: rmdir then fails
    }
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn all_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                all_dirs(&e.path(), out);
            }
        }
    }
}

fn remove_pid_below(dir: &Path, pid: i32) {
    let mut dirs = Vec::new();
    all_dirs(dir, &mut dirs);
    for d in dirs {
        let procs = d.join("cgroup.procs");
        if let Ok(text) = fs::read_to_string(&procs) {
            let kept: Vec<&str> = text
                .split_whitespace()
                .filter(|p| p.parse::<i32>().ok() != Some(pid))
                .collect();
            let mut out = kept.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = fs::write(&procs, out);
        }
    }
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

fn busy() -> io::Error {
    io::Error::from_raw_os_error(libc::EBUSY)
}

/// Kernel semantics for writes to special files; `None` lets the plain write happen.
fn intercept_write(s: &mut State, path: &Path, contents: &str) -> Option<io::Result<()>> {
    let result = (|| {
        let name = path.file_name()?.to_str()?;
        let dir = path.parent()?;
        let (mount_dir, hier) = mount_of(s, path)?.clone();
        let is_v2 = matches!(hier, Hier::V2);
        match name {
            "cgroup.procs" => {
                if !path.exists() {
                    return Some(Err(not_found()));
                }
                let pid: i32 = match contents.trim() {
                    "0" => i32::try_from(std::process::id()).ok()?,
                    p => match p.parse() {
                        Ok(p) => p,
                        Err(_) => return Some(Err(io::Error::from_raw_os_error(libc::EINVAL))),
                    },
                };
                let domain_enabled = words(&dir.join("cgroup.subtree_control"))
                    .iter()
                    .any(|c| c == "memory" || c == "io");
                if is_v2 && dir != mount_dir && domain_enabled {
                    return Some(Err(busy()));
                }
                if let Some(&(_, errno)) = s.refuse_move.iter().find(|(p, _)| *p == pid) {
                    return Some(Err(io::Error::from_raw_os_error(errno)));
                }
                let forked = s
                    .fork_on_move
                    .iter()
                    .position(|(p, _)| *p == pid)
                    .map(|i| s.fork_on_move.remove(i).1);
                if let Some(child) = forked {
                    let mut dirs = Vec::new();
                    all_dirs(&mount_dir, &mut dirs);
                    if let Some(from) = dirs
                        .iter()
                        .map(|d| d.join("cgroup.procs"))
                        .find(|f| words(f).iter().any(|w| w == &pid.to_string()))
                    {
                        let mut pids = words(&from);
                        pids.push(child.to_string());
                        let _ = fs::write(&from, format!("{}\n", pids.join("\n")));
                    }
                }
                remove_pid_below(&mount_dir, pid);
                let mut pids = words(path);
                pids.push(pid.to_string());
                Some(fs::write(path, format!("{}\n", pids.join("\n"))))
            }
            "cgroup.subtree_control" if is_v2 => {
                let available = words(&dir.join("cgroup.controllers"));
                let mut enabled = words(path);
                let has_procs = !words(&dir.join("cgroup.procs")).is_empty();
                for tok in contents.split_whitespace() {
                    let (on, ctrl) = match tok.split_at(1) {
                        ("+", c) => (true, c),
                        ("-", c) => (false, c),
                        _ => return Some(Err(io::Error::from_raw_os_error(libc::EINVAL))),
                    };
                    if !available.iter().any(|c| c == ctrl) {
                        return Some(Err(not_found()));
                    }
                    if on && ctrl == "memory" && has_procs && dir != mount_dir {
                        return Some(Err(busy()));
                    }
                    enabled.retain(|c| c != ctrl);
                    if on {
                        enabled.push(ctrl.to_string());
                    }
                }
                let ordered: Vec<&str> = V2_ORDER
                    .iter()
                    .copied()
                    .filter(|c| enabled.iter().any(|e| e == c))
                    .collect();
                Some(fs::write(path, format!("{}\n", ordered.join(" "))))
            }
            "cgroup.kill" => {
                if !path.exists() {
                    return Some(Err(not_found()));
                }
                if contents.trim() == "1" {
                    s.kill_writes.push(path.to_path_buf());
                    // The processes die: they leave every hierarchy, not just this tree.
                    let mut dirs = Vec::new();
                    all_dirs(dir, &mut dirs);
                    let root = s.root.clone();
                    for d in dirs {
                        for pid in words(&d.join("cgroup.procs")) {
                            if let Ok(pid) = pid.parse() {
                                remove_pid_below(&root, pid);
                            }
                        }
                    }
                }
                Some(Ok(()))
            }
            "memory.memsw.limit_in_bytes" if s.options.memsw_refuses => {
                Some(Err(io::Error::from_raw_os_error(libc::EINVAL)))
            }
            _ => None,
        }
    })();
    result
}
