//! What a dead executor left behind: its rows are settled `lost`, its job killed, its
//! cgroup removed.

use std::time::Duration;

use crate::error::Error;
use crate::executor::admission::{Admission, AdmissionConfig};
use crate::executor::{self, Executor};
use crate::store::Store;

use super::keys::hostname;

/// Settle rows whose executor died, kill what they left behind, remove their cgroups.
/// Returns the ids marked `lost`.
pub(crate) fn recover_orphans(store: &mut Store, exec: &Executor) -> Result<Vec<i64>, Error> {
    let host = hostname();
    Admission::new(
        store,
        host.clone(),
        AdmissionConfig {
            budget_mb: 0,
            burst_factor: 1.0,
            auto_burst: None,
            queue_timeout: None,
            poll: Duration::from_millis(200),
        },
    )
    .reclaim_dead()?;
    // Only what is proven orphaned is touched: rows and cgroups of an executor in another PID
    // namespace (a container, `unshare -p`) are left alone even when its pid means nothing here.
    let me = executor::owner::Identity::current();
    let orphans = store.orphans(&host, &|o| match o.executor_pid {
        Some(pid) => {
            executor::owner::liveness(
                me,
                o.executor_boot_id.as_deref(),
                o.executor_pidns.and_then(|n| u64::try_from(n).ok()),
                pid,
                o.executor_start,
            ) == executor::owner::Liveness::Dead
        }
        None => true,
    })?;
    for o in &orphans {
        let same_ns = o.executor_pidns.and_then(|n| u64::try_from(n).ok()) == me.pidns
            || o.executor_pidns.is_none();
        if let (Some(pid), start, true) = (o.job_pid, o.job_start, same_ns) {
            // The job leads its own process group; kill it only if it is the same process.
            if executor::process_alive(pid, start) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    exec.backend().cleanup_stale(CGROUP_PREFIX, &|name| {
        executor::owner::cgroup_liveness(me, name) != executor::owner::Liveness::Dead
    });
    // Settlements spooled when the disk was full are recorded before anything is called lost.
    crate::store::spool::replay(store)?;
    let ids: Vec<i64> = orphans.iter().map(|o| o.id).collect();
    store.mark_lost(&ids)?;
    Ok(ids)
}

/// Prefix of every cgroup presize creates.
pub const CGROUP_PREFIX: &str = executor::owner::CGROUP_PREFIX;
