//! What a job *needs* versus what its cgroup was *charged*, and how many OOM kills happened.
//!
//! The charged peak (`memory.peak` on v2, `memory.max_usage_in_bytes` on v1) includes page
//! cache, which the kernel reclaims before it OOM-kills anything: a `dd` writing 1.5 GB is
//! charged 1.5 GB but needs a few MB, and under a 300 MB cap it is charged 300 MB and succeeds.
//! What decides an OOM kill is the memory the kernel cannot reclaim (there is no swap for a
//! job: swap is capped with the memory). [`need_bytes`] reads that from `memory.stat`; the
//! executor samples it while the job runs and keeps the maximum.
//!
//! * v2: `anon + shmem + kernel_stack + pagetables + sec_pagetables + percpu + sock + vmalloc
//!   + slab_unreclaimable` (every key that is present; reclaimable slab and file cache are left out).
//! * v1: `total_rss + total_shmem` (anonymous memory incl. transparent huge pages, and tmpfs /
//!   shared memory). v1 has no split of kernel memory into reclaimable and unreclaimable
//!   (`memory.kmem.usage_in_bytes` is mostly reclaimable slab: 43 MB of dentries and buffer
//!   heads for that `dd`), so kernel memory is left out on v1.

use std::path::Path;

use super::fs::keyed_value;

/// Keys of v2 `memory.stat` that the kernel cannot reclaim without swap.
const V2_NEED_KEYS: [&str; 9] = [
    "anon",
    "shmem",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "slab_unreclaimable",
];

/// Non-reclaimable memory from the text of a v2 `memory.stat`; `None` without `anon`.
pub(crate) fn v2_need(stat: &str) -> Option<u64> {
    keyed_value(stat, "anon")?;
    Some(
        V2_NEED_KEYS
            .iter()
            .filter_map(|k| keyed_value(stat, k))
            .fold(0u64, u64::saturating_add),
    )
}

/// Non-reclaimable memory from the text of a v1 `memory.stat` (hierarchical `total_*` keys,
/// falling back to the local ones); `None` without `rss`.
pub(crate) fn v1_need(stat: &str) -> Option<u64> {
    let get = |k: &str| keyed_value(stat, &format!("total_{k}")).or_else(|| keyed_value(stat, k));
    let rss = get("rss")?;
    Some(rss.saturating_add(get("shmem").unwrap_or(0)))
}

/// Sample the need of the job cgroup whose memory directory is `dir`.
pub(crate) fn need_bytes(dir: &Path, v2: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    if v2 {
        v2_need(&stat)
    } else {
        v1_need(&stat)
    }
}

/// OOM kills the kernel made in the cgroup: `memory.events` (v2) or `memory.oom_control` (v1)
/// `oom_kill`; 0 when unreadable.
pub(crate) fn oom_kills(dir: &Path, v2: bool) -> u64 {
    let file = if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|t| keyed_value(&t, "oom_kill"))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_need_leaves_out_file_cache_and_reclaimable_slab() {
        let stat = "anon 10485760\nfile 1572864000\nkernel 50000000\nkernel_stack 16384\n\
                    pagetables 40960\npercpu 1000\nsock 0\nvmalloc 0\nshmem 4096\n\
                    slab_reclaimable 45000000\nslab_unreclaimable 200000\nslab 45200000\n";
        assert_eq!(
            v2_need(stat),
            Some(10485760 + 16384 + 40960 + 1000 + 4096 + 200000)
        );
        assert_eq!(v2_need("file 5\n"), None);
    }

    #[test]
    fn v1_need_is_rss_plus_shmem() {
        // What the kernel reported for `dd` writing 1.5 GB on this host (cgroup v1).
        let stat = "cache 1572864000\nrss 212992\nrss_huge 0\nshmem 0\nmapped_file 0\n\
                    total_cache 1572864000\ntotal_rss 212992\ntotal_rss_huge 0\n\
                    total_shmem 0\ntotal_mapped_file 0\n";
        assert_eq!(v1_need(stat), Some(212992));
        assert_eq!(v1_need("rss 100\nshmem 28\n"), Some(128));
        assert_eq!(v1_need("cache 5\n"), None);
    }

    #[test]
    fn files_are_read_by_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("memory.stat"), "anon 100\nfile 900\nshmem 10\n").unwrap();
        std::fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(need_bytes(d, true), Some(110));
        assert_eq!(oom_kills(d, true), 2);
        // v1 reads other keys and another file.
        assert_eq!(need_bytes(d, false), None);
        assert_eq!(oom_kills(d, false), 0);
        std::fs::write(
            d.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(oom_kills(d, false), 3);
        assert_eq!(need_bytes(Path::new("/nonexistent-presize"), true), None);
    }
}
