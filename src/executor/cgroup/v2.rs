//! cgroup v2 backend for a delegated subtree (systemd `Delegate=yes`).
//!
//! Layout: `<base>/supervisor` holds the executor, `<base>/<job>` are the job cgroups. Only
//! `<base>` (which is delegated to us) is ever modified: its `cgroup.subtree_control` gets
//! `+memory`, then `+pids` and `+cpu` where available; ancestors are never touched.
//!
//! The kernel refuses `+memory` on `<base>` while any process is still in it (no internal
//! processes). When other processes share `<base>` with presize — a worker daemon that calls
//! `presize run` — they are moved into `supervisor` too, if [`MovePeers`] allows it and `<base>`
//! belongs to this user; otherwise detection fails (auto detection then uses no cgroup).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    child_dirs, keyed_value, mkdir, read_keyed, read_pids, read_string, read_u64, read_words,
    rmdir_retry, writable, write_file, AppliedLimits, CgroupError, CgroupLimits, CgroupStats,
    JobCgroup, Layout, Mount, ProcCgroup, SUPERVISOR_DIR,
};

/// Controllers enabled for job cgroups; `memory` is required, the others are used if delegated.
const WANTED: [&str; 3] = ["memory", "pids", "cpu"];
/// Attempts to enable `memory` while other processes (e.g. concurrent presize instances still
/// moving into `supervisor`, or children a moved peer forked meanwhile) keep `<base>` busy.
const ENABLE_TRIES: u32 = 50;
const ENABLE_PAUSE: Duration = Duration::from_millis(10);
/// Rounds of "read `<base>/cgroup.procs`, move every pid into `supervisor`" before giving up
/// on peers that keep forking.
const MOVE_ROUNDS: u32 = 100;
/// Extended attributes systemd sets to `1` on the cgroup of a unit with `Delegate=yes`
/// (`user.delegate` also from the user manager, systemd ≥ 251 according to its NEWS).
const DELEGATE_XATTRS: [&str; 2] = ["trusted.delegate", "user.delegate"];

/// Whether presize may move other processes out of its delegated cgroup into `supervisor`
/// (config `[executor] v2_move_peers`). Whatever the mode, no process is moved out of a cgroup
/// whose directory (or its `cgroup.procs`) is not owned by presize's effective uid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MovePeers {
    /// Move them when the cgroup is delegated to this user: as root, when systemd marked it
    /// delegated (`trusted.delegate` or `user.delegate` xattr = 1); as another user, when the
    /// directory and its `cgroup.procs` are owned by that user (what delegation to a user is).
    #[default]
    Auto,
    /// Also as root in an unmarked cgroup (manual delegation, containers, older systemd).
    Always,
    /// Never move other processes: presize must be alone in its cgroup to use v2.
    Never,
}

impl MovePeers {
    /// The lowercase name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            MovePeers::Auto => "auto",
            MovePeers::Always => "always",
            MovePeers::Never => "never",
        }
    }
}

/// Options of the v2 backend (from `[executor]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V2Options {
    /// What to do with other processes in presize's delegated cgroup.
    pub move_peers: MovePeers,
}

/// A usable delegated cgroup2 subtree.
#[derive(Debug, Clone)]
pub struct V2Backend {
    base: PathBuf,
    enabled: Vec<String>,
    moved_peers: Vec<i32>,
}

impl V2Backend {
    /// The delegated cgroup that job cgroups are created in.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Controllers enabled for the job cgroups (from `<base>/cgroup.subtree_control`).
    pub fn controllers(&self) -> &[String] {
        &self.enabled
    }

    /// Other processes this detection moved from `<base>` into `<base>/supervisor` (in the
    /// order moved; may include pids that exited after the move).
    pub fn moved_peers(&self) -> &[i32] {
        &self.moved_peers
    }

    /// Finds our cgroup2 base and prepares delegation (idempotent, safe under concurrency).
    pub(super) fn detect_at(
        root: &Path,
        own: &ProcCgroup,
        mounts: &[Mount],
        options: &V2Options,
    ) -> Result<V2Backend, String> {
        let own_path = own
            .v2_path()
            .ok_or("no unified (0::) entry in /proc/self/cgroup")?;
        let loc = super::locate(root, mounts, own_path, |m| m.fstype == "cgroup2", "cgroup2")?;
        let in_supervisor = Path::new(&loc.rel).file_name() == Some(SUPERVISOR_DIR.as_ref());
        let base = if in_supervisor {
            loc.dir.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            loc.dir.clone()
        };
        if base == loc.mount_dir || !base.starts_with(&loc.mount_dir) {
            return Err(format!(
                "this process is in the root cgroup of {}; run presize in a delegated cgroup \
                 (systemd Delegate=yes){}",
                loc.mount_dir.display(),
                user_hint(&loc.mount_dir)
            ));
        }
        if loc.read_only {
            return Err(format!("{} is mounted read-only", loc.mount_dir.display()));
        }
        let available = read_words(&base.join("cgroup.controllers")).map_err(|e| e.to_string())?;
        if !available.iter().any(|c| c == "memory") {
            return Err(format!(
                "memory controller not delegated to {} (cgroup.controllers: {}); use systemd \
                 Delegate=yes{}",
                base.display(),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(" ")
                },
                user_hint(&loc.mount_dir)
            ));
        }
        if let Ok(kind) = read_string(&base.join("cgroup.type")) {
            if kind.trim() != "domain" {
                return Err(format!(
                    "{} has cgroup.type \"{}\"; need a plain domain cgroup",
                    base.display(),
                    kind.trim()
                ));
            }
        }
        let subtree = base.join("cgroup.subtree_control");
        if !writable(&base) || !writable(&subtree) {
            return Err(format!(
                "cannot write {} (delegate it to this user){}",
                subtree.display(),
                user_hint(&loc.mount_dir)
            ));
        }
        let moved = if in_supervisor {
            false
        } else {
            move_self_to_supervisor(&base)?;
            true
        };
        let mut peers = Peers {
            allowed: peer_move_allowed(&base, options.move_peers),
            moved: Vec::new(),
        };
        match enable_controllers(&base, &available, &mut peers) {
            Ok(enabled) => Ok(V2Backend {
                base,
                enabled,
                moved_peers: peers.moved,
            }),
            Err(reason) => {
                peers.move_back(&base);
                if moved {
                    undo_move(&base);
                }
                Err(reason)
            }
        }
    }
    pub(super) fn create(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<JobCgroup, CgroupError> {
        let dir = self.base.join(name);
        mkdir(&dir)?;
        // From here on, an error drops `job`, which removes the directory again.
        let mut job = JobCgroup::new(Layout::V2 { dir: dir.clone() });
        job.applied = apply_limits(&dir, limits)?;
        job.open_procs()?;
        Ok(job)
    }

    pub(super) fn cleanup_stale(&self, select: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut removed = Vec::new();
        for dir in child_dirs(&self.base) {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if name == SUPERVISOR_DIR || !select(&name) {
                continue;
            }
            let job = JobCgroup::new(Layout::V2 { dir });
            if job.remove().is_ok() {
                removed.push(name);
            }
        }
        removed.sort();
        removed
    }
}

/// Creates `<base>/supervisor` (fine if it exists) and moves this process into it.
fn move_self_to_supervisor(base: &Path) -> Result<(), String> {
    let sup = base.join(SUPERVISOR_DIR);
    match mkdir(&sup) {
        Ok(()) | Err(CgroupError::AlreadyExists { .. }) => {}
        Err(e) => return Err(format!("cannot create the supervisor cgroup: {e}")),
    }
    write_file(&sup.join("cgroup.procs"), &std::process::id().to_string())
        .map_err(|e| format!("cannot move this process into {}: {e}", sup.display()))
}

/// Best effort: move back into `base` and remove `supervisor` if no other process uses it.
fn undo_move(base: &Path) {
    let _ = write_file(&base.join("cgroup.procs"), &std::process::id().to_string());
    let sup = base.join(SUPERVISOR_DIR);
    if matches!(read_pids(&sup), Ok(p) if p.is_empty()) {
        let _ = rmdir_retry(&sup);
    }
}

/// Whether every process still in `base` runs our own executable, i.e. is a concurrent
/// presize about to move itself into `supervisor`, so that waiting can help.
fn only_presize_left(base: &Path) -> bool {
    let Ok(me) = std::fs::read_link("/proc/self/exe") else {
        return false;
    };
    read_pids(base).is_ok_and(|pids| {
        pids.iter()
            .all(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == me))
    })
}

/// Other processes in `<base>`: whether they may be moved, and which were.
struct Peers {
    /// `Err(why not)` when presize must not move them.
    allowed: Result<(), String>,
    moved: Vec<i32>,
}

impl Peers {
    /// Moves every process still in `base` into `base/supervisor`, repeating until `base` is
    /// empty (a peer may fork between the read of `cgroup.procs` and its move; the child
    /// then stays behind and is caught by the next round).
    fn move_all(&mut self, base: &Path) -> Result<(), String> {
        let target = base.join(SUPERVISOR_DIR).join("cgroup.procs");
        let mut left = Vec::new();
        for round in 0..MOVE_ROUNDS {
            left = read_pids(base).map_err(|e| e.to_string())?;
            if left.is_empty() {
                return Ok(());
            }
            for &pid in &left {
                match write_file(&target, &pid.to_string()) {
                    Ok(()) => self.moved.push(pid),
                    // Exited between the read and the move.
                    Err(CgroupError::Io { ref source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        return Err(format!(
                            "cannot move process {pid} into {}: {e}",
                            target.display()
                        ))
                    }
                }
            }
            if round >= 10 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Err(format!(
            "processes keep appearing in {} ({left:?} after {MOVE_ROUNDS} rounds of moving)",
            base.display()
        ))
    }

    /// Best effort after a failed detection: put the moved processes back into `base`.
    fn move_back(&mut self, base: &Path) {
        let procs = base.join("cgroup.procs");
        for pid in self.moved.drain(..) {
            let _ = write_file(&procs, &pid.to_string());
        }
    }
}

/// Whether presize may move other processes out of `base` under `mode`; `Err` says why not.
fn peer_move_allowed(base: &Path, mode: MovePeers) -> Result<(), String> {
    if mode == MovePeers::Never {
        return Err("[executor] v2_move_peers = \"never\"".into());
    }
    let meta = std::fs::metadata(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let procs_uid = std::fs::metadata(base.join("cgroup.procs"))
        .map(|m| m.uid())
        .map_err(|e| format!("{}/cgroup.procs: {e}", base.display()))?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    decide_peer_move(
        mode,
        euid,
        meta.uid(),
        procs_uid,
        delegation_marked(base),
        base,
    )
}

/// The rule behind [`peer_move_allowed`], without file-system access (unit-tested).
fn decide_peer_move(
    mode: MovePeers,
    euid: u32,
    dir_uid: u32,
    procs_uid: u32,
    marked: bool,
    base: &Path,
) -> Result<(), String> {
    if mode == MovePeers::Never {
        return Err("[executor] v2_move_peers = \"never\"".into());
    }
    if dir_uid != euid || procs_uid != euid {
        return Err(format!(
            "{} is owned by uid {dir_uid} (cgroup.procs by uid {procs_uid}), not by this \
             user (uid {euid}): presize moves no process out of a cgroup it does not own",
            base.display()
        ));
    }
    if euid == 0 && mode == MovePeers::Auto && !marked {
        return Err(format!(
            "{} is not marked delegated (no trusted.delegate or user.delegate xattr, which \
             systemd sets for Delegate=yes); set [executor] v2_move_peers = \"always\" to move \
             them anyway",
            base.display()
        ));
    }
    Ok(())
}

/// systemd's delegation mark on `dir`: a `trusted.delegate` or `user.delegate` xattr of `1`.
fn delegation_marked(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    DELEGATE_XATTRS.iter().any(|name| {
        let Ok(name) = CString::new(*name) else {
            return false;
        };
        let mut buf = [0u8; 8];
        // SAFETY: `path` and `name` are NUL-terminated and outlive the call; `buf` is a
        // writable buffer of the length passed.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        usize::try_from(n).is_ok_and(|n| buf.get(..n) == Some(b"1".as_slice()))
    })
}

/// For a user without a usable cgroup: the command that gets them one, when systemd's user
/// manager has a subtree delegated to them (`user.slice/user-UID.slice/user@UID.service`).
fn user_hint(mount_dir: &Path) -> String {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return String::new();
    }
    let manager = mount_dir
        .join("user.slice")
        .join(format!("user-{euid}.slice"))
        .join(format!("user@{euid}.service"));
    match std::fs::metadata(&manager) {
        Ok(m) if m.is_dir() && m.uid() == euid => format!(
            "; your systemd user manager has a delegated subtree ({}): run presize as \
             `systemd-run --user --scope -p Delegate=yes presize run ...`",
            manager.display()
        ),
        _ => String::new(),
    }
}

/// Enables `memory` (required) then `pids`/`cpu` (if available) on `base`; returns what is enabled.
///
/// `memory` goes first: enabling a threaded controller (`cpu`, `pids`) alone while `base` still
/// has processes would turn it into a thread root and break every child. While other processes
/// keep `base` busy, they are moved into `supervisor` if `peers` allows it, else waited for if
/// they are all presize (concurrent instances about to move themselves).
fn enable_controllers(
    base: &Path,
    available: &[String],
    peers: &mut Peers,
) -> Result<Vec<String>, String> {
    let subtree = base.join("cgroup.subtree_control");
    let current = read_words(&subtree).map_err(|e| e.to_string())?;
    if !current.iter().any(|c| c == "memory") {
        let mut attempt = 1;
        loop {
            let err = match write_file(&subtree, "+memory") {
                Ok(()) => break,
                Err(e) => e,
            };
            let busy = matches!(err, CgroupError::Io { ref source, .. }
                if source.raw_os_error() == Some(libc::EBUSY));
            if busy && attempt < ENABLE_TRIES {
                if peers.allowed.is_ok() {
                    peers.move_all(base).map_err(|why| {
                        format!("cannot enable the memory controller: {err}; {why}")
                    })?;
                    attempt += 1;
                    continue;
                }
                if only_presize_left(base) {
                    attempt += 1;
                    std::thread::sleep(ENABLE_PAUSE);
                    continue;
                }
            }
            let others = read_pids(base).unwrap_or_default();
            let hint = match (&peers.allowed, others.is_empty()) {
                (_, true) => String::new(),
                (Ok(()), false) => format!(
                    "; processes {others:?} are still in {} after moving them {} times",
                    base.display(),
                    attempt - 1
                ),
                (Err(why), false) => format!(
                    "; processes {others:?} are still in {} and were not moved ({why}): \
                     presize must be the only process in its delegated cgroup (or use systemd \
                     DelegateSubgroup=supervisor, systemd >= 254)",
                    base.display()
                ),
            };
            return Err(format!("cannot enable the memory controller: {err}{hint}"));
        }
    }
    for ctrl in WANTED.iter().skip(1) {
        let have = current.iter().any(|c| c == ctrl);
        if !have && available.iter().any(|c| c == ctrl) {
            // Optional: a job still runs capped without pids/cpu.
            let _ = write_file(&subtree, &format!("+{ctrl}"));
        }
    }
    let enabled = read_words(&subtree).map_err(|e| e.to_string())?;
    if enabled.iter().any(|c| c == "memory") {
        Ok(enabled)
    } else {
        Err(format!(
            "memory is not enabled in {} after writing +memory",
            subtree.display()
        ))
    }
}

/// Writes the job's limits into a fresh v2 cgroup.
fn apply_limits(dir: &Path, limits: &CgroupLimits) -> Result<AppliedLimits, CgroupError> {
    let mut applied = AppliedLimits::default();
    if let Some(bytes) = limits.memory_bytes {
        write_file(&dir.join("memory.max"), &bytes.to_string())?;
        applied.memory_bytes = Some(bytes);
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            applied.swap_limited = write_file(&swap, "0").is_ok();
        }
    }
    let oom_group = dir.join("memory.oom.group");
    if oom_group.exists() {
        write_file(&oom_group, "1")?;
    }
    if let Some(n) = limits.pids_max {
        let pids = dir.join("pids.max");
        if pids.exists() {
            write_file(&pids, &n.to_string())?;
            applied.pids_max = Some(n);
        }
    }
    Ok(applied)
}

/// `memory.peak`, `cpu.stat usage_usec` × 1000, `memory.events` `oom_kill`/`oom_group_kill`.
pub(super) fn stats(dir: &Path) -> CgroupStats {
    let events = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
    let count = |key| keyed_value(&events, key).unwrap_or(0);
    CgroupStats {
        peak_bytes: read_u64(&dir.join("memory.peak")),
        cpu_ns: read_keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us.saturating_mul(1000)),
        oom_killed: count("oom_kill") > 0 || count("oom_group_kill") > 0,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::fakefs::{FakeCgroupFs, Options};
    use super::super::{Backend, CgroupError, CgroupKind, CgroupLimits, CgroupStats};
    use super::{decide_peer_move, MovePeers, V2Options};

    const MI: &str = "41 31 0:38 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
    const SVC: &str = "/system.slice/presize.service";

    fn me() -> String {
        std::process::id().to_string()
    }

    /// A pure-v2 host where systemd delegated `controllers` to `SVC` and started us in it.
    fn delegated(options: Options, controllers: &[&str]) -> (FakeCgroupFs, PathBuf) {
        let fake = FakeCgroupFs::with_options(options);
        let mount = fake.mount_v2(
            "/sys/fs/cgroup",
            &[
                "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
            ],
        );
        fake.write(
            &mount.join("cgroup.subtree_control"),
            "cpuset cpu io memory pids\n",
        );
        let slice = fake.mkdir_p(&mount, "system.slice");
        fake.write(
            &slice.join("cgroup.subtree_control"),
            "cpu io memory pids\n",
        );
        let svc = fake.mkdir_p(&mount, SVC);
        // systemd Delegate=...: the service's cgroup.controllers is what the slice enables,
        // limited to the delegated set.
        fake.write(
            &svc.join("cgroup.controllers"),
            &format!("{}\n", controllers.join(" ")),
        );
        fake.write(&svc.join("cgroup.procs"), &format!("{}\n", me()));
        (fake, svc)
    }

    fn detect(fake: &FakeCgroupFs, own: &str) -> Backend {
        Backend::detect_at(fake.root(), &format!("0::{own}\n"), MI)
    }

    fn lines(fake: &FakeCgroupFs, p: &Path) -> Vec<String> {
        fake.read(p)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn detect_moves_self_into_supervisor_and_enables_controllers() {
        let (fake, svc) = delegated(Options::default(), &["cpu", "io", "memory", "pids"]);
        let b = detect(&fake, SVC);
        assert_eq!(b.kind(), CgroupKind::V2, "{:?}", b.why_none());
        assert!(b.enforces_memory());
        let Backend::V2(v2) = &b else { unreachable!() };
        assert_eq!(v2.base(), svc);
        assert_eq!(
            lines(&fake, &svc.join("supervisor/cgroup.procs")),
            vec![me()]
        );
        assert!(lines(&fake, &svc.join("cgroup.procs")).is_empty());
        // Only memory, pids and cpu; never io; only on <base>.
        assert_eq!(
            fake.read(&svc.join("cgroup.subtree_control")),
            "cpu memory pids\n"
        );
        assert_eq!(v2.controllers(), ["cpu", "memory", "pids"]);
        let slice = svc.parent().unwrap_or(&svc);
        assert_eq!(
            fake.read(&slice.join("cgroup.subtree_control")),
            "cpu io memory pids\n"
        );
    }

    #[test]
    fn detect_without_cpu_or_pids_still_works() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        let b = detect(&fake, SVC);
        assert_eq!(b.kind(), CgroupKind::V2, "{:?}", b.why_none());
        assert_eq!(fake.read(&svc.join("cgroup.subtree_control")), "memory\n");
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 30),
            pids_max: Some(10),
        };
        let job = b.create("job-nopids", &limits).expect("create");
        assert_eq!(
            job.applied().pids_max,
            None,
            "no pids controller: not enforced"
        );
        assert_eq!(job.applied().memory_bytes, Some(1 << 30));
        // cpu.stat exists in every v2 cgroup, so CPU is measured even without +cpu.
        fake.write(&job.paths()[0].join("cpu.stat"), "usage_usec 7\n");
        assert_eq!(job.stats().cpu_ns, Some(7000));
    }

    #[test]
    fn create_writes_limits_and_stats_parse_kernel_files() {
        let (fake, svc) = delegated(Options::default(), &["cpu", "memory", "pids"]);
        let b = detect(&fake, SVC);
        let limits = CgroupLimits {
            memory_bytes: Some(100 << 20),
            pids_max: Some(64),
        };
        let job = b.create("job-1", &limits).expect("create");
        let dir = svc.join("job-1");
        assert_eq!(job.paths(), vec![dir.clone()]);
        assert_eq!(job.kind(), CgroupKind::V2);
        assert_eq!(fake.read(&dir.join("memory.max")), "104857600");
        assert_eq!(fake.read(&dir.join("memory.swap.max")), "0");
        assert_eq!(fake.read(&dir.join("memory.oom.group")), "1");
        assert_eq!(fake.read(&dir.join("pids.max")), "64");
        assert_eq!(job.procs_fds().len(), 1);
        assert!(job.procs_fds()[0] >= 0);
        let applied = job.applied();
        assert_eq!(applied.memory_bytes, Some(100 << 20));
        assert!(applied.swap_limited);
        assert_eq!(applied.pids_max, Some(64));

        // Fresh cgroup: zeros are real measurements.
        assert_eq!(
            job.stats(),
            CgroupStats {
                peak_bytes: Some(0),
                cpu_ns: Some(0),
                oom_killed: false
            }
        );
        fake.write(&dir.join("memory.peak"), "104857600\n");
        fake.write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 141\noom 1\noom_kill 2\noom_group_kill 1\n",
        );
        fake.write(
            &dir.join("cpu.stat"),
            "usage_usec 1078123\nuser_usec 900000\nsystem_usec 178123\nnr_periods 0\n",
        );
        assert_eq!(
            job.stats(),
            CgroupStats {
                peak_bytes: Some(100 << 20),
                cpu_ns: Some(1_078_123_000),
                oom_killed: true
            }
        );
        // Only the group kill counted.
        fake.write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 1\n",
        );
        assert!(job.stats().oom_killed);
        // Missing files are "unmeasured", not 0.
        std::fs::remove_file(dir.join("memory.peak")).expect("rm");
        std::fs::remove_file(dir.join("cpu.stat")).expect("rm");
        std::fs::remove_file(dir.join("memory.events")).expect("rm");
        assert_eq!(job.stats(), CgroupStats::default());

        job.remove().expect("remove");
        assert!(!dir.exists());
        assert!(
            svc.join("supervisor").is_dir(),
            "supervisor is never removed"
        );
    }

    #[test]
    fn create_without_memory_limit_leaves_max_and_swap_alone() {
        let (fake, svc) = delegated(Options::default(), &["memory", "pids"]);
        let b = detect(&fake, SVC);
        let job = b
            .create("job-nolimit", &CgroupLimits::default())
            .expect("create");
        let dir = svc.join("job-nolimit");
        assert_eq!(fake.read(&dir.join("memory.max")), "max\n");
        assert_eq!(fake.read(&dir.join("memory.swap.max")), "max\n");
        assert_eq!(fake.read(&dir.join("memory.oom.group")), "1");
        assert_eq!(job.applied(), Default::default());
    }

    #[test]
    fn old_kernel_without_peak_swap_or_kill() {
        let options = Options {
            swap: false,
            memory_peak: false,
            cgroup_kill: false,
            ..Options::default()
        };
        let (fake, svc) = delegated(options, &["memory", "pids"]);
        let b = detect(&fake, SVC);
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 26),
            pids_max: None,
        };
        let job = b.create("job-old", &limits).expect("create");
        assert!(!job.applied().swap_limited);
        assert_eq!(job.stats().peak_bytes, None);
        // kill_all falls back to the SIGKILL loop.
        let dir = svc.join("job-old");
        fake.write(&dir.join("cgroup.procs"), "424242\n424243\n");
        assert!(!job.is_empty());
        assert_eq!(job.pids().expect("pids"), vec![424242, 424243]);
        job.kill_all().expect("kill");
        assert!(job.is_empty());
        assert_eq!(fake.kills(), vec![424242, 424243]);
        assert!(fake.kill_writes().is_empty());
        job.remove().expect("remove");
        assert!(!dir.exists());
    }

    #[test]
    fn kill_all_writes_cgroup_kill() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        let b = detect(&fake, SVC);
        let job = b.create("job-k", &CgroupLimits::default()).expect("create");
        let dir = svc.join("job-k");
        fake.write(&dir.join("cgroup.procs"), "515151\n");
        job.kill_all().expect("kill");
        assert_eq!(fake.kill_writes(), vec![dir.join("cgroup.kill")]);
        assert!(
            fake.kills().is_empty(),
            "cgroup.kill emptied it: no pid loop needed"
        );
        assert!(job.is_empty());
    }

    #[test]
    fn remove_kills_first_and_drop_cleans_up() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        let b = detect(&fake, SVC);
        {
            let job = b
                .create("job-drop", &CgroupLimits::default())
                .expect("create");
            // A job that created a sub-cgroup of its own.
            let sub = job.paths()[0].join("inner");
            std::fs::create_dir(&sub).expect("mkdir");
            super::super::fakefs::on_mkdir(&sub);
            fake.write(&sub.join("cgroup.procs"), "616161\n");
        }
        assert!(!svc.join("job-drop").exists(), "dropped without remove()");
        assert_eq!(fake.kill_writes().len(), 1);
    }

    #[test]
    fn already_in_supervisor_uses_parent_and_is_idempotent() {
        let (fake, svc) = delegated(Options::default(), &["cpu", "memory", "pids"]);
        let first = detect(&fake, SVC);
        assert_eq!(first.kind(), CgroupKind::V2);
        // A second presize in the same service, started by the first one (inherits supervisor).
        let second = detect(&fake, &format!("{SVC}/supervisor"));
        let Backend::V2(v2) = &second else {
            panic!("{:?}", second.why_none())
        };
        assert_eq!(v2.base(), svc);
        assert_eq!(
            lines(&fake, &svc.join("supervisor/cgroup.procs")),
            vec![me()]
        );
        assert_eq!(
            fake.read(&svc.join("cgroup.subtree_control")),
            "cpu memory pids\n"
        );
        // And one started by systemd after the first moved (pre-existing supervisor dir).
        fake.write(&svc.join("supervisor/cgroup.procs"), "");
        fake.write(&svc.join("cgroup.subtree_control"), "\n");
        fake.write(&svc.join("cgroup.procs"), &format!("{}\n", me()));
        let third = detect(&fake, SVC);
        assert_eq!(third.kind(), CgroupKind::V2, "{:?}", third.why_none());
        assert_eq!(
            lines(&fake, &svc.join("supervisor/cgroup.procs")),
            vec![me()]
        );
    }

    #[test]
    fn root_cgroup_falls_back_to_none() {
        let fake = FakeCgroupFs::new();
        let mount = fake.mount_v2("/sys/fs/cgroup", &["cpu", "memory", "pids"]);
        fake.write(&mount.join("cgroup.procs"), &format!("{}\n", me()));
        let b = detect(&fake, "/");
        assert_eq!(b.kind(), CgroupKind::None);
        let why = b.why_none().unwrap_or_default();
        assert!(why.contains("root cgroup"), "{why}");
        assert!(why.contains("cgroup v1"), "{why}");
        assert!(!mount.join("supervisor").exists(), "nothing touched");
        assert_eq!(fake.read(&mount.join("cgroup.subtree_control")), "\n");
        // ... also when "/supervisor" (its parent is the root).
        assert_eq!(detect(&fake, "/supervisor").kind(), CgroupKind::None);
        let forced = Backend::from_kind_at(CgroupKind::V2, fake.root(), "0::/\n", MI);
        assert!(
            matches!(forced, Err(CgroupError::Unsupported(ref m)) if m.contains("root cgroup"))
        );
    }

    #[test]
    fn memory_not_delegated_falls_back_without_side_effects() {
        let (fake, svc) = delegated(Options::default(), &["cpu", "pids"]);
        let b = detect(&fake, SVC);
        assert_eq!(b.kind(), CgroupKind::None);
        let why = b.why_none().unwrap_or_default();
        assert!(why.contains("memory controller not delegated"), "{why}");
        assert!(!svc.join("supervisor").exists());
        assert_eq!(lines(&fake, &svc.join("cgroup.procs")), vec![me()]);
        assert_eq!(fake.read(&svc.join("cgroup.subtree_control")), "\n");
    }

    #[test]
    fn other_process_in_base_gives_none_and_undoes_the_move() {
        let (fake, svc) = delegated(Options::default(), &["cpu", "memory", "pids"]);
        fake.write(&svc.join("cgroup.procs"), &format!("{}\n999999\n", me()));
        let start = std::time::Instant::now();
        let b = detect(&fake, SVC);
        // 999999 is not a presize about to move itself: no point waiting for it.
        assert!(start.elapsed() < std::time::Duration::from_millis(400));
        assert_eq!(b.kind(), CgroupKind::None);
        let why = b.why_none().unwrap_or_default();
        assert!(why.contains("999999"), "{why}");
        assert!(why.contains("cannot enable the memory controller"), "{why}");
        // Back where we started; cpu/pids were not enabled on their own (thread-root trap).
        assert!(lines(&fake, &svc.join("cgroup.procs")).contains(&me()));
        assert!(!svc.join("supervisor").exists());
        assert_eq!(fake.read(&svc.join("cgroup.subtree_control")), "\n");
    }

    #[test]
    fn threaded_base_is_refused() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        fake.write(&svc.join("cgroup.type"), "domain invalid\n");
        let b = detect(&fake, SVC);
        assert_eq!(b.kind(), CgroupKind::None);
        assert!(b.why_none().unwrap_or_default().contains("domain invalid"));
    }

    #[test]
    fn create_rejects_bad_names_and_existing_dirs() {
        let (fake, _svc) = delegated(Options::default(), &["memory"]);
        let b = detect(&fake, SVC);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "supervisor",
            "x y",
            &"a".repeat(65),
            "ü",
        ] {
            assert!(
                matches!(
                    b.create(bad, &CgroupLimits::default()),
                    Err(CgroupError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        let job = b.create("dup", &CgroupLimits::default()).expect("create");
        let again = b.create("dup", &CgroupLimits::default());
        assert!(matches!(again, Err(CgroupError::AlreadyExists { .. })));
        drop(job);
        b.create(&"a".repeat(64), &CgroupLimits::default())
            .expect("64 chars is fine");
    }

    #[test]
    fn cleanup_stale_removes_only_dead_prefixed_cgroups() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        let b = detect(&fake, SVC);
        for name in ["presize-a", "presize-b", "other"] {
            std::mem::forget(b.create(name, &CgroupLimits::default()).expect("create"));
        }
        fake.write(&svc.join("presize-a/cgroup.procs"), "717171\n");
        fake.write(&svc.join("supervisor/cgroup.procs"), &format!("{}\n", me()));
        assert!(
            b.cleanup_stale("", &|_| false).is_empty(),
            "empty prefix: nothing"
        );
        assert!(b.cleanup_stale("../", &|_| false).is_empty());
        let removed = b.cleanup_stale("presize-", &|n| n == "presize-b");
        assert_eq!(removed, vec!["presize-a".to_string()]);
        assert!(!svc.join("presize-a").exists());
        assert!(svc.join("presize-b").is_dir());
        assert!(svc.join("other").is_dir());
        assert_eq!(fake.kill_writes(), vec![svc.join("presize-a/cgroup.kill")]);
        // "supervisor" is never a candidate, whatever the prefix.
        assert_eq!(b.cleanup_stale("s", &|_| false), Vec::<String>::new());
        assert!(svc.join("supervisor").is_dir());
        assert_eq!(b.cleanup_stale("o", &|_| false), vec!["other".to_string()]);
    }

    #[test]
    fn mount_in_a_container_with_a_nonroot_mount_root() {
        // cgroupns-less container: the mount's root is the container's cgroup.
        let fake = FakeCgroupFs::new();
        let mount = fake.mount_v2("/sys/fs/cgroup", &["memory", "pids"]);
        let svc = fake.mkdir_p(&mount, "app");
        fake.write(&svc.join("cgroup.controllers"), "memory pids\n");
        fake.write(&svc.join("cgroup.procs"), &format!("{}\n", me()));
        let mi = "50 40 0:38 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let b = Backend::detect_at(fake.root(), "0::/docker/abc/app\n", mi);
        let Backend::V2(v2) = &b else {
            panic!("{:?}", b.why_none())
        };
        assert_eq!(v2.base(), svc);
        // A cgroup outside the mount's root is not visible.
        let b = Backend::detect_at(fake.root(), "0::/elsewhere\n", mi);
        assert!(b
            .why_none()
            .unwrap_or_default()
            .contains("outside the mount"));
    }

    fn detect_with(fake: &FakeCgroupFs, own: &str, move_peers: MovePeers) -> Backend {
        Backend::detect_at_with(
            fake.root(),
            &format!("0::{own}\n"),
            MI,
            &V2Options { move_peers },
        )
    }

    /// Marks `dir` delegated the way systemd does (`user.delegate` = 1).
    fn mark_delegated(dir: &Path) {
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
        let name = std::ffi::CString::new("user.delegate").expect("name");
        // SAFETY: valid NUL-terminated strings and a 1-byte value.
        let rc =
            unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    }

    #[test]
    fn shared_marked_base_moves_peers_into_supervisor() {
        let (fake, svc) = delegated(Options::default(), &["cpu", "memory", "pids"]);
        mark_delegated(&svc);
        fake.write(
            &svc.join("cgroup.procs"),
            &format!("900001\n{}\n900002\n", me()),
        );
        let b = detect(&fake, SVC);
        let Backend::V2(v2) = &b else {
            panic!("{:?}", b.why_none())
        };
        assert!(lines(&fake, &svc.join("cgroup.procs")).is_empty());
        let mut sup = lines(&fake, &svc.join("supervisor/cgroup.procs"));
        sup.sort();
        let mut want = vec!["900001".to_string(), "900002".to_string(), me()];
        want.sort();
        assert_eq!(sup, want);
        assert_eq!(v2.moved_peers(), [900001, 900002]);
        assert_eq!(
            fake.read(&svc.join("cgroup.subtree_control")),
            "cpu memory pids\n"
        );
    }

    #[test]
    fn unmarked_base_as_root_needs_always() {
        let (fake, svc) = delegated(Options::default(), &["memory", "pids"]);
        fake.write(&svc.join("cgroup.procs"), &format!("900003\n{}\n", me()));
        // auto: root, no delegation mark -> nothing moved, none backend, the reason says so.
        let b = detect_with(&fake, SVC, MovePeers::Auto);
        let why = b.why_none().unwrap_or_default().to_string();
        assert!(why.contains("not marked delegated"), "{why}");
        assert!(why.contains("v2_move_peers = \"always\""), "{why}");
        assert!(why.contains("900003"), "{why}");
        assert!(lines(&fake, &svc.join("cgroup.procs")).contains(&"900003".to_string()));
        assert!(!svc.join("supervisor").exists());
        // always: moved.
        let b = detect_with(&fake, SVC, MovePeers::Always);
        assert_eq!(b.kind(), CgroupKind::V2, "{:?}", b.why_none());
        assert!(lines(&fake, &svc.join("cgroup.procs")).is_empty());
        assert!(lines(&fake, &svc.join("supervisor/cgroup.procs")).contains(&"900003".to_string()));
    }

    #[test]
    fn never_leaves_peers_alone_even_when_marked() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        mark_delegated(&svc);
        fake.write(&svc.join("cgroup.procs"), &format!("900004\n{}\n", me()));
        let b = detect_with(&fake, SVC, MovePeers::Never);
        let why = b.why_none().unwrap_or_default().to_string();
        assert!(why.contains("v2_move_peers = \"never\""), "{why}");
        assert_eq!(
            lines(&fake, &svc.join("cgroup.procs")),
            vec!["900004".to_string(), me()]
        );
        assert!(!svc.join("supervisor").exists());
        assert_eq!(fake.read(&svc.join("cgroup.subtree_control")), "\n");
    }

    #[test]
    fn child_forked_during_the_move_is_caught_by_the_next_round() {
        let (fake, svc) = delegated(Options::default(), &["memory", "pids"]);
        mark_delegated(&svc);
        fake.write(&svc.join("cgroup.procs"), &format!("900005\n{}\n", me()));
        // 900005 forks 900006 just before it is moved; 900006 forks 900007 likewise.
        fake.fork_on_move(900005, 900006);
        fake.fork_on_move(900006, 900007);
        let b = detect(&fake, SVC);
        let Backend::V2(v2) = &b else {
            panic!("{:?}", b.why_none())
        };
        assert_eq!(v2.moved_peers(), [900005, 900006, 900007]);
        assert!(lines(&fake, &svc.join("cgroup.procs")).is_empty());
        assert_eq!(
            fake.read(&svc.join("cgroup.subtree_control")),
            "memory pids\n"
        );
    }

    #[test]
    fn exited_peer_is_skipped_and_refused_move_is_undone() {
        let (fake, svc) = delegated(Options::default(), &["memory"]);
        mark_delegated(&svc);
        fake.write(
            &svc.join("cgroup.procs"),
            &format!("900008\n900009\n{}\n", me()),
        );
        // EACCES (e.g. another user's process): detection fails and 900008, already moved,
        // goes back.
        fake.refuse_move(900009, libc::EACCES);
        let b = detect(&fake, SVC);
        let why = b.why_none().unwrap_or_default().to_string();
        assert!(why.contains("cannot move process 900009"), "{why}");
        // 900008 was moved and is put back; presize too; nothing enabled.
        let mut back = lines(&fake, &svc.join("cgroup.procs"));
        back.sort();
        let mut want = vec!["900008".to_string(), "900009".to_string(), me()];
        want.sort();
        assert_eq!(back, want);
        assert_eq!(fake.read(&svc.join("cgroup.subtree_control")), "\n");
        assert!(!svc.join("supervisor").exists());

        // ESRCH (exited between the read and the move) is not an error; the fake keeps
        // listing the pid, so detection must give up after MOVE_ROUNDS, not loop forever.
        fake.write(&svc.join("cgroup.procs"), &format!("900010\n{}\n", me()));
        fake.refuse_move(900010, libc::ESRCH);
        let b = detect(&fake, SVC);
        let why = b.why_none().unwrap_or_default().to_string();
        assert!(why.contains("keep appearing"), "{why}");
    }

    #[test]
    fn peer_move_rule() {
        let base = Path::new("/sys/fs/cgroup/x.service");
        let ok = |mode, euid, dir, procs, marked| {
            decide_peer_move(mode, euid, dir, procs, marked, base).is_ok()
        };
        // Root: auto needs the systemd mark; always does not; never never.
        assert!(ok(MovePeers::Auto, 0, 0, 0, true));
        assert!(!ok(MovePeers::Auto, 0, 0, 0, false));
        assert!(ok(MovePeers::Always, 0, 0, 0, false));
        assert!(!ok(MovePeers::Never, 0, 0, 0, true));
        // Root inside a subtree delegated to someone else: never touched.
        assert!(!ok(MovePeers::Always, 0, 1000, 1000, true));
        // A user: ownership of the directory and its cgroup.procs is the delegation.
        assert!(ok(MovePeers::Auto, 1000, 1000, 1000, false));
        assert!(!ok(MovePeers::Auto, 1000, 1000, 0, true));
        assert!(!ok(MovePeers::Always, 1000, 0, 0, true));
        let why = decide_peer_move(MovePeers::Auto, 1000, 0, 0, false, base)
            .err()
            .unwrap_or_default();
        assert!(why.contains("does not own"), "{why}");
    }
}
