//! The no-cgroup backend: nothing is enforced; the caller measures with `wait4` rusage.

use super::fs::Fs;
use super::job::{JobCgroup, Layout};
use super::{CgroupError, CgroupLimits};

/// No cgroups: job cgroups have no directories, stats are all "unmeasured".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoneBackend {
    reason: String,
}

impl NoneBackend {
    /// A none backend chosen because of `reason` (shown to the operator).
    pub fn new(reason: impl Into<String>) -> NoneBackend {
        NoneBackend {
            reason: reason.into(),
        }
    }

    /// The none backend the configuration asked for (`cgroup = "none"`).
    pub(crate) fn disabled() -> NoneBackend {
        NoneBackend::new("cgroups disabled by configuration (cgroup = \"none\")")
    }

    /// Why no cgroup backend is used.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub(super) fn create(
        &self,
        _name: &str,
        _limits: &CgroupLimits,
    ) -> Result<JobCgroup, CgroupError> {
        Ok(JobCgroup::new(Fs::kernel(), Layout::None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, CgroupKind, CgroupLimits, CgroupStats};
    use super::NoneBackend;

    #[test]
    fn none_backend_creates_empty_job() {
        let b = Backend::None(NoneBackend::new("testing"));
        assert_eq!(b.kind(), CgroupKind::None);
        assert!(!b.enforces_memory());
        assert_eq!(b.why_none(), Some("testing"));
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 20),
            pids_max: Some(4),
        };
        let job = b.create("job-1", &limits).expect("create");
        assert!(job.procs_fds().is_empty());
        assert!(job.paths().is_empty());
        assert_eq!(job.stats(), CgroupStats::default());
        assert_eq!(job.applied(), Default::default());
        assert!(job.is_empty());
        job.kill_all().expect("kill_all is a no-op");
        job.remove().expect("remove is a no-op");
        assert!(b.cleanup_stale("job-", &|_| false).is_empty());
    }

    #[test]
    fn none_backend_still_validates_names() {
        let b = Backend::None(NoneBackend::disabled());
        assert!(b.create("../etc", &CgroupLimits::default()).is_err());
    }

    #[test]
    fn from_kind_none_is_disabled() {
        let b = Backend::from_kind(CgroupKind::None).expect("none always works");
        assert_eq!(b.kind(), CgroupKind::None);
        assert!(b
            .why_none()
            .unwrap_or("")
            .contains("disabled by configuration"));
    }
}
