//! cgroup v1 backend (also hybrid hosts): one directory per hierarchy (memory, cpuacct, pids),
//! each nested under this process's own cgroup in that hierarchy, plus — where a cgroup2 tree
//! is mounted next to v1 and writable — a directory there used for `cgroup.kill`.

mod prewarm;

pub use prewarm::Prewarm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::fs::{child_names, read_keyed, read_u64, writable, Fs};
use super::job::{JobCgroup, Layout};
use super::procfs::{locate, Mount, ProcCgroup};
use super::{AppliedLimits, CgroupError, CgroupLimits, CgroupStats};

/// Usable v1 hierarchies: the parent directories job cgroups are created in.
#[derive(Debug, Clone)]
pub struct V1Backend {
    fs: Fs,
    memory: PathBuf,
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
    unified: Option<PathBuf>,
}

/// The directories of one v1 job cgroup (any may be missing for a leftover found by cleanup).
#[derive(Debug, Clone, Default)]
pub(crate) struct V1Dirs {
    pub memory: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

impl V1Dirs {
    /// Every directory in placement order (memory first), without duplicates (co-mounted
    /// controllers share one directory).
    pub(crate) fn all(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for d in [&self.memory, &self.cpuacct, &self.pids, &self.unified]
            .into_iter()
            .flatten()
        {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }
}

impl V1Backend {
    /// Parent directory in the memory hierarchy (this process's own memory cgroup).
    #[cfg(test)]
    pub(crate) fn memory_parent(&self) -> &Path {
        &self.memory
    }

    /// Parent directory in the cpuacct hierarchy, if one is mounted and writable.
    #[cfg(test)]
    pub(crate) fn cpuacct_parent(&self) -> Option<&Path> {
        self.cpuacct.as_deref()
    }

    /// Parent directory in the pids hierarchy, if one is mounted and writable.
    #[cfg(test)]
    pub(crate) fn pids_parent(&self) -> Option<&Path> {
        self.pids.as_deref()
    }

    /// Parent directory in the hybrid cgroup2 tree, if mounted and writable.
    #[cfg(test)]
    pub(crate) fn unified_parent(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    pub(super) fn detect_at(
        fs: &Fs,
        root: &Path,
        own: &ProcCgroup,
        mounts: &[Mount],
    ) -> Result<V1Backend, String> {
        let own_mem = own
            .v1_path("memory")
            .ok_or("no memory controller line in /proc/self/cgroup")?;
        let mem = locate(
            root,
            mounts,
            own_mem,
            |m| m.is_v1_with("memory"),
            "memory hierarchy",
        )?;
        if mem.read_only {
            return Err(format!("{} is mounted read-only", mem.mount_dir.display()));
        }
        let limit = mem.dir.join("memory.limit_in_bytes");
        if !limit.exists() {
            return Err(format!("{} does not exist", limit.display()));
        }
        if !writable(&mem.dir) {
            return Err(format!(
                "cannot write {} (needs root or a delegated memory cgroup)",
                mem.dir.display()
            ));
        }
        let optional = |ctrl: &str| -> Option<PathBuf> {
            let own_path = own.v1_path(ctrl)?;
            let loc = locate(root, mounts, own_path, |m| m.is_v1_with(ctrl), ctrl).ok()?;
            (!loc.read_only && writable(&loc.dir)).then_some(loc.dir)
        };
        let unified = own.v2_path().and_then(|own_path| {
            let loc = locate(root, mounts, own_path, |m| m.fstype == "cgroup2", "cgroup2").ok()?;
            (!loc.read_only && writable(&loc.dir)).then_some(loc.dir)
        });
        Ok(V1Backend {
            fs: fs.clone(),
            memory: mem.dir,
            cpuacct: optional("cpuacct"),
            pids: optional("pids"),
            unified,
        })
    }

    /// Starts keeping the kernel's migration lock warm until the job's child has joined its
    /// cgroups (see [`Prewarm`]).
    pub(crate) fn prewarm(&self) -> Prewarm {
        Prewarm::start(self.fs.clone(), self.memory.clone())
    }

    pub(super) fn create(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<JobCgroup, CgroupError> {
        let mut dirs = V1Dirs::default();
        let made = self.make_dirs(name, &mut dirs);
        // From here on, an error drops `job`, which removes whatever was created.
        let mut job = JobCgroup::new(self.fs.clone(), Layout::V1(dirs.clone()));
        made?;
        job.applied = apply_limits(&self.fs, &dirs, limits)?;
        job.open_procs()?;
        Ok(job)
    }

    /// Creates the job directories, recording each in `dirs` as soon as it exists.
    fn make_dirs(&self, name: &str, dirs: &mut V1Dirs) -> Result<(), CgroupError> {
        let memory = self.memory.join(name);
        self.fs.mkdir(&memory)?;
        dirs.memory = Some(memory);
        if let Some(parent) = &self.cpuacct {
            dirs.cpuacct = Some(make_shared(&self.fs, parent, name, dirs)?);
        }
        if let Some(parent) = &self.pids {
            dirs.pids = Some(make_shared(&self.fs, parent, name, dirs)?);
        }
        if let Some(parent) = &self.unified {
            // Optional: only used for cgroup.kill (and CPU time without cpuacct).
            let dir = parent.join(name);
            if self.fs.mkdir(&dir).is_ok() {
                dirs.unified = Some(dir);
            }
        }
        Ok(())
    }

    pub(super) fn cleanup_stale(&self, select: &dyn Fn(&str) -> bool) -> Vec<String> {
        let parents: Vec<&PathBuf> = [
            Some(&self.memory),
            self.cpuacct.as_ref(),
            self.pids.as_ref(),
            self.unified.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let names: BTreeSet<String> = parents
            .iter()
            .flat_map(|p| child_names(p))
            .filter(|n| select(n))
            .collect();
        let existing = |parent: Option<&PathBuf>, name: &str| {
            parent.map(|p| p.join(name)).filter(|d| d.is_dir())
        };
        let mut removed = Vec::new();
        for name in names {
            let dirs = V1Dirs {
                memory: existing(Some(&self.memory), &name),
                cpuacct: existing(self.cpuacct.as_ref(), &name),
                pids: existing(self.pids.as_ref(), &name),
                unified: existing(self.unified.as_ref(), &name),
            };
            if JobCgroup::new(self.fs.clone(), Layout::V1(dirs))
                .remove()
                .is_ok()
            {
                removed.push(name);
            }
        }
        removed
    }
}

/// `parent/name`, created unless an earlier (co-mounted) hierarchy already made that directory.
fn make_shared(fs: &Fs, parent: &Path, name: &str, made: &V1Dirs) -> Result<PathBuf, CgroupError> {
    let dir = parent.join(name);
    if !made.all().contains(&dir) {
        fs.mkdir(&dir)?;
    }
    Ok(dir)
}

/// Writes the job's limits: memory (then memsw = the same, tolerated) and pids.
fn apply_limits(
    fs: &Fs,
    dirs: &V1Dirs,
    limits: &CgroupLimits,
) -> Result<AppliedLimits, CgroupError> {
    let mut applied = AppliedLimits::default();
    if let (Some(bytes), Some(mem)) = (limits.memory_bytes, &dirs.memory) {
        fs.write_file(&mem.join("memory.limit_in_bytes"), &bytes.to_string())?;
        applied.memory_bytes = Some(bytes);
        // memsw must be >= limit_in_bytes, so it is written second; missing without swap
        // accounting, and a refusal only means swap is not capped.
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            applied.swap_limited = fs.write_file(&memsw, &bytes.to_string()).is_ok();
        }
    }
    if let (Some(n), Some(pids)) = (limits.pids_max, &dirs.pids) {
        fs.write_file(&pids.join("pids.max"), &n.to_string())?;
        applied.pids_max = Some(n);
    }
    Ok(applied)
}

/// `memory.max_usage_in_bytes`, `cpuacct.usage` (or the hybrid `cpu.stat`), `memory.oom_control`.
pub(super) fn stats(dirs: &V1Dirs) -> CgroupStats {
    let peak_bytes = dirs
        .memory
        .as_ref()
        .and_then(|m| read_u64(&m.join("memory.max_usage_in_bytes")));
    let cpu_ns = dirs
        .cpuacct
        .as_ref()
        .and_then(|c| read_u64(&c.join("cpuacct.usage")))
        .or_else(|| {
            let unified = dirs.unified.as_ref()?;
            read_keyed(&unified.join("cpu.stat"), "usage_usec").map(|us| us.saturating_mul(1000))
        });
    let oom_killed = dirs
        .memory
        .as_ref()
        .and_then(|m| read_keyed(&m.join("memory.oom_control"), "oom_kill"))
        .is_some_and(|n| n > 0);
    CgroupStats {
        peak_bytes,
        cpu_ns,
        oom_killed,
    }
}

#[cfg(test)]
mod tests;
