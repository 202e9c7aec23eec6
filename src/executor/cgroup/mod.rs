//! TEMPORARY stand-in (None backend only) until the cgroupfs backends land.
use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupKind {
    V2,
    V1,
    None,
}
pub struct CgroupLimits {
    pub memory_bytes: Option<u64>,
    pub pids_max: Option<u64>,
}
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub peak_bytes: Option<u64>,
    pub cpu_ns: Option<u64>,
    pub oom_killed: bool,
}
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid cgroup name {0:?}")]
    InvalidName(String),
    #[error("{0}")]
    Unsupported(String),
}
pub struct NoneBackend {
    reason: String,
}
pub enum Backend {
    None(NoneBackend),
}
impl Backend {
    pub fn detect() -> Backend {
        Backend::None(NoneBackend {
            reason: "cgroup backends not built".into(),
        })
    }
    pub fn from_kind(_k: CgroupKind) -> Result<Backend, CgroupError> {
        Ok(Self::detect())
    }
    pub fn kind(&self) -> CgroupKind {
        CgroupKind::None
    }
    pub fn enforces_memory(&self) -> bool {
        false
    }
    pub fn why_none(&self) -> Option<&str> {
        match self {
            Backend::None(n) => Some(&n.reason),
        }
    }
    pub fn create(&self, _name: &str, _l: &CgroupLimits) -> Result<JobCgroup, CgroupError> {
        Ok(JobCgroup { fds: Vec::new() })
    }
    pub fn cleanup_stale(&self, _prefix: &str, _is_live: &dyn Fn(&str) -> bool) -> Vec<String> {
        Vec::new()
    }
}
pub struct JobCgroup {
    fds: Vec<RawFd>,
}
impl JobCgroup {
    pub fn procs_fds(&self) -> &[RawFd] {
        &self.fds
    }
    pub fn stats(&self) -> CgroupStats {
        CgroupStats::default()
    }
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn remove(self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}
