//! cgroupfs I/O. Every operation with a kernel side effect (a write to an interface file,
//! `mkdir`, `rmdir`, SIGKILL) goes through [`CgroupOps`], which the backends hold as a [`Fs`]
//! handle: [`Kernel`] in production, a fake filesystem in unit tests. Reads are plain file
//! reads (the fake serves real files from a temp dir).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{access, AccessFlags, Pid};

use super::CgroupError;

/// Attempts of `rmdir` while the kernel still reports `EBUSY`.
const RMDIR_TRIES: u32 = 10;
/// Pause between two `rmdir` attempts.
const RMDIR_PAUSE: Duration = Duration::from_millis(20);

/// The operations of cgroupfs that change kernel state.
pub(crate) trait CgroupOps: Send + Sync + fmt::Debug {
    /// Writes `contents` to an existing interface file (never creates one).
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    /// Creates a cgroup directory.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Sends SIGKILL to `pid`; a gone pid is not an error.
    fn kill(&self, pid: i32);
}

/// The running kernel's cgroupfs.
#[derive(Debug)]
pub(crate) struct Kernel;

impl CgroupOps for Kernel {
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
        f.write_all(contents.as_bytes())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn kill(&self, pid: i32) {
        // ESRCH for a pid that is already gone is expected.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A shared handle on the [`CgroupOps`] a backend and its job cgroups use.
#[derive(Debug, Clone)]
pub(crate) struct Fs(Arc<dyn CgroupOps>);

impl Fs {
    /// The running kernel.
    pub(crate) fn kernel() -> Fs {
        Fs(Arc::new(Kernel))
    }

    /// Any implementation (the unit tests' fake filesystem).
    #[cfg(test)]
    pub(crate) fn new(ops: Arc<dyn CgroupOps>) -> Fs {
        Fs(ops)
    }

    /// Writes `contents` to an existing cgroupfs file.
    pub(crate) fn write_file(&self, path: &Path, contents: &str) -> Result<(), CgroupError> {
        self.0.write(path, contents).map_err(|e| io_err(path, e))
    }

    /// Creates a cgroup directory; `AlreadyExists` when it is there already.
    pub(crate) fn mkdir(&self, path: &Path) -> Result<(), CgroupError> {
        match self.0.mkdir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::AlreadyExists {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(io_err(path, e)),
        }
    }

    /// Removes an (empty) cgroup directory, retrying while the kernel reports `EBUSY`; a
    /// directory that is already gone counts as removed.
    pub(crate) fn rmdir_retry(&self, path: &Path) -> Result<(), CgroupError> {
        let mut attempt = 1;
        loop {
            match self.0.rmdir(path) {
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

    /// SIGKILL to `pid` (errors ignored: the pid may be gone).
    pub(crate) fn kill(&self, pid: i32) {
        self.0.kill(pid)
    }
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
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

/// `access(path, W_OK)`: whether this process may write `path`.
pub(crate) fn writable(path: &Path) -> bool {
    access(path, AccessFlags::W_OK).is_ok()
}
