//! Hiding the cost of the first cgroup v1 migration behind presize's own start-up.
//!
//! Every write to a v1 `cgroup.procs` takes the kernel's global `cgroup_threadgroup_rwsem`
//! for writing. When no migration happened for a while, that first takes one RCU grace
//! period (the lock's readers are switched to their slow path), 13-15 ms on the development
//! host at 100 ms spacing; a migration within a grace period of the last one costs ~0.5 ms
//! (BENCHMARKS.md, "cgroup v1"). The job's child must migrate on v1 (`CLONE_INTO_CGROUP`
//! exists only for cgroup2), so presize starts the grace period early: a thread moves
//! presize into the memory cgroup it is already in (a no-op migration that takes the same
//! lock) and repeats it every few milliseconds until the job has been placed, at most
//! [`MAX_WARM`]. The wait then overlaps with opening the store and planning the job instead
//! of adding to the job's start. While it runs, forks on the host take the lock's slow
//! (atomic) read path, as during any migration.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::fs::Fs;

/// Pause between two no-op migrations: well below a grace period, so the lock stays in
/// writer mode.
const PAUSE: Duration = Duration::from_millis(3);
/// Longest time the thread keeps the lock warm when nobody stops it.
pub(crate) const MAX_WARM: Duration = Duration::from_secs(2);

/// A running warm-up; stops when [`Prewarm::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct Prewarm {
    stop: Arc<AtomicBool>,
    migrations: Arc<std::sync::atomic::AtomicU32>,
}

impl Prewarm {
    /// Starts the thread that moves this process into `own_cgroup` (its current memory
    /// cgroup) until stopped. Best effort: a failed write ends the thread quietly.
    pub(crate) fn start(fs: Fs, own_cgroup: PathBuf) -> Prewarm {
        let stop = Arc::new(AtomicBool::new(false));
        let migrations = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&migrations));
        let procs = own_cgroup.join("cgroup.procs");
        let me = std::process::id().to_string();
        let spawned = std::thread::Builder::new()
            .name("presize-prewarm".into())
            .spawn(move || {
                let start = Instant::now();
                while !flag.load(Ordering::Relaxed) && start.elapsed() < MAX_WARM {
                    if fs.write_file(&procs, &me).is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(PAUSE);
                }
            });
        if spawned.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        Prewarm { stop, migrations }
    }

    /// Stops the warm-up (the thread ends after its current write).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// No-op migrations done so far.
    pub fn migrations(&self) -> u32 {
        self.migrations.load(Ordering::Relaxed)
    }
}

impl Drop for Prewarm {
    fn drop(&mut self) {
        self.stop();
    }
}
