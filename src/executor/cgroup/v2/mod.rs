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

mod delegation;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fs::{
    child_dirs, keyed_value, read_keyed, read_string, read_u64, read_words, writable, Fs,
};
use super::job::{JobCgroup, Layout};
use super::procfs::{locate, Mount, ProcCgroup};
use super::{AppliedLimits, CgroupError, CgroupLimits, CgroupStats, SUPERVISOR_DIR};
use delegation::{
    enable_controllers, move_self_to_supervisor, peer_move_allowed, undo_move, user_hint, Peers,
};

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
    fs: Fs,
    base: PathBuf,
}

impl V2Backend {
    /// The delegated cgroup that job cgroups are created in.
    #[cfg(test)]
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// Finds our cgroup2 base and prepares delegation (idempotent, safe under concurrency).
    pub(super) fn detect_at(
        fs: &Fs,
        root: &Path,
        own: &ProcCgroup,
        mounts: &[Mount],
        options: &V2Options,
    ) -> Result<V2Backend, String> {
        let own_path = own
            .v2_path()
            .ok_or("no unified (0::) entry in /proc/self/cgroup")?;
        let loc = locate(root, mounts, own_path, |m| m.fstype == "cgroup2", "cgroup2")?;
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
            move_self_to_supervisor(fs, &base)?;
            true
        };
        let mut peers = Peers {
            allowed: peer_move_allowed(&base, options.move_peers),
            moved: Vec::new(),
        };
        match enable_controllers(fs, &base, &available, &mut peers) {
            Ok(()) => Ok(V2Backend {
                fs: fs.clone(),
                base,
            }),
            Err(reason) => {
                peers.move_back(fs, &base);
                if moved {
                    undo_move(fs, &base);
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
        self.fs.mkdir(&dir)?;
        // From here on, an error drops `job`, which removes the directory again.
        let mut job = JobCgroup::new(self.fs.clone(), Layout::V2 { dir: dir.clone() });
        job.applied = apply_limits(&self.fs, &dir, limits)?;
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
            let job = JobCgroup::new(self.fs.clone(), Layout::V2 { dir });
            if job.remove().is_ok() {
                removed.push(name);
            }
        }
        removed.sort();
        removed
    }
}

/// Writes the job's limits into a fresh v2 cgroup.
fn apply_limits(fs: &Fs, dir: &Path, limits: &CgroupLimits) -> Result<AppliedLimits, CgroupError> {
    let mut applied = AppliedLimits::default();
    if let Some(bytes) = limits.memory_bytes {
        fs.write_file(&dir.join("memory.max"), &bytes.to_string())?;
        applied.memory_bytes = Some(bytes);
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            applied.swap_limited = fs.write_file(&swap, "0").is_ok();
        }
    }
    let oom_group = dir.join("memory.oom.group");
    if oom_group.exists() {
        fs.write_file(&oom_group, "1")?;
    }
    if let Some(n) = limits.pids_max {
        let pids = dir.join("pids.max");
        if pids.exists() {
            fs.write_file(&pids, &n.to_string())?;
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
mod tests;
