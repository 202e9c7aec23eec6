use std::path::PathBuf;

use super::super::fakefs::{FakeCgroupFs, Options};
use super::super::{Backend, CgroupKind, CgroupLimits, CgroupStats};

/// This host's layout, but with cpu and cpuacct co-mounted (the usual systemd layout).
const MI: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const CG: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/
";

struct Host {
    fake: FakeCgroupFs,
    memory: PathBuf,
    cpuacct: PathBuf,
    pids: PathBuf,
    unified: PathBuf,
}

fn hybrid(options: Options) -> Host {
    let fake = FakeCgroupFs::with_options(options);
    let mem_root = fake.mount_v1("/sys/fs/cgroup/memory", &["memory"]);
    let memory = fake.mkdir_p(&mem_root, "/process_api/abc");
    let cpuacct = fake.mount_v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]);
    let pids = fake.mount_v1("/sys/fs/cgroup/pids", &["pids"]);
    fake.mount_v1("/sys/fs/cgroup/systemd", &["name=systemd"]);
    let unified = fake.mount_v2("/sys/fs/cgroup/unified", &["hugetlb"]);
    Host {
        fake,
        memory,
        cpuacct,
        pids,
        unified,
    }
}

#[test]
fn hybrid_host_is_v1_with_unified_kill() {
    let h = hybrid(Options::default());
    let b = h.fake.detect_at(CG, MI);
    let Backend::V1(v1) = &b else {
        panic!("{:?}", b.why_none())
    };
    assert_eq!(v1.memory_parent(), h.memory);
    assert_eq!(v1.cpuacct_parent(), Some(h.cpuacct.as_path()));
    assert_eq!(v1.pids_parent(), Some(h.pids.as_path()));
    assert_eq!(v1.unified_parent(), Some(h.unified.as_path()));
    // Nothing was touched in the cgroup2 tree by the (failed) v2 detection.
    assert!(!h.unified.join("supervisor").exists());

    let limits = CgroupLimits {
        memory_bytes: Some(100 << 20),
        pids_max: Some(32),
    };
    let job = b.create("presize-j1", &limits).expect("create");
    let dirs = [
        h.memory.join("presize-j1"),
        h.cpuacct.join("presize-j1"),
        h.pids.join("presize-j1"),
        h.unified.join("presize-j1"),
    ];
    assert_eq!(job.paths(), dirs.to_vec());
    assert_eq!(job.procs_fds().len(), 4);
    let f = &h.fake;
    assert_eq!(f.read(&dirs[0].join("memory.limit_in_bytes")), "104857600");
    assert_eq!(
        f.read(&dirs[0].join("memory.memsw.limit_in_bytes")),
        "104857600"
    );
    assert_eq!(f.read(&dirs[2].join("pids.max")), "32");
    assert!(job.applied().swap_limited);
    assert_eq!(job.applied().pids_max, Some(32));

    f.write(&dirs[0].join("memory.max_usage_in_bytes"), "104857600\n");
    f.write(
        &dirs[0].join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    f.write(&dirs[1].join("cpuacct.usage"), "1078000000\n");
    assert_eq!(
        job.stats(),
        CgroupStats {
            peak_bytes: Some(100 << 20),
            cpu_ns: Some(1_078_000_000),
            oom_killed: true
        }
    );

    // A setsid'd grandchild is in every hierarchy; cgroup.kill (unified) gets it.
    for d in &dirs {
        f.write(&d.join("cgroup.procs"), "818181\n");
    }
    job.kill_all().expect("kill");
    assert_eq!(f.kill_writes(), vec![dirs[3].join("cgroup.kill")]);
    assert!(job.is_empty());
    job.remove().expect("remove");
    for d in &dirs {
        assert!(!d.exists(), "{}", d.display());
    }
}

#[test]
fn memsw_refused_is_tolerated_and_missing_memsw_is_fine() {
    let h = hybrid(Options {
        memsw_refuses: true,
        ..Options::default()
    });
    let b = h.fake.detect_at(CG, MI);
    let limits = CgroupLimits {
        memory_bytes: Some(1 << 27),
        pids_max: None,
    };
    let job = b.create("presize-sw", &limits).expect("create");
    assert_eq!(job.applied().memory_bytes, Some(1 << 27));
    assert!(!job.applied().swap_limited);
    drop(job);
    drop(h);

    let h = hybrid(Options {
        memsw: false,
        ..Options::default()
    });
    let b = h.fake.detect_at(CG, MI);
    let job = b.create("presize-sw", &limits).expect("create");
    assert!(!job.applied().swap_limited);
    assert_eq!(job.applied().pids_max, None);
    assert_eq!(h.fake.read(&h.pids.join("presize-sw/pids.max")), "max\n");
}

#[test]
fn separate_cpu_and_cpuacct_mounts_and_no_unified() {
    // This very host: cpu and cpuacct mounted separately; also drop cgroup2.
    let fake = FakeCgroupFs::new();
    let mem_root = fake.mount_v1("/sys/fs/cgroup/memory", &["memory"]);
    let memory = fake.mkdir_p(&mem_root, "/process_api/abc");
    fake.mount_v1("/sys/fs/cgroup/cpu", &["cpu"]);
    let cpuacct = fake.mount_v1("/sys/fs/cgroup/cpuacct", &["cpuacct"]);
    let mi = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
    let cg = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n";
    let b = fake.detect_at(cg, mi);
    assert_eq!(b.kind(), CgroupKind::V1, "{:?}", b.why_none());
    let job = b
        .create("presize-x", &CgroupLimits::default())
        .expect("create");
    assert_eq!(
        job.paths(),
        vec![memory.join("presize-x"), cpuacct.join("presize-x")]
    );
    // Without the unified tree, kill_all uses the pid loop.
    fake.write(&memory.join("presize-x/cgroup.procs"), "919191\n");
    fake.write(&cpuacct.join("presize-x/cgroup.procs"), "919191\n");
    job.kill_all().expect("kill");
    assert_eq!(fake.kills(), vec![919191]);
    assert!(fake.kill_writes().is_empty());
}

#[test]
fn cpu_from_unified_cpu_stat_when_no_cpuacct() {
    let fake = FakeCgroupFs::new();
    let mem_root = fake.mount_v1("/sys/fs/cgroup/memory", &["memory"]);
    fake.mkdir_p(&mem_root, "/process_api/abc");
    let unified = fake.mount_v2("/sys/fs/cgroup/unified", &[]);
    let mi = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    let b = fake.detect_at("4:memory:/process_api/abc\n0::/\n", mi);
    let job = b
        .create("presize-u", &CgroupLimits::default())
        .expect("create");
    assert_eq!(job.stats().cpu_ns, Some(0));
    fake.write(&unified.join("presize-u/cpu.stat"), "usage_usec 250\n");
    assert_eq!(job.stats().cpu_ns, Some(250_000));
    assert_eq!(job.stats().peak_bytes, Some(0));
}

#[test]
fn read_only_or_missing_memory_hierarchy_is_none() {
    let h = hybrid(Options::default());
    let ro = MI.replace(
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime",
        "35 31 0:32 / /sys/fs/cgroup/memory ro,relatime",
    );
    let b = h.fake.detect_at(CG, &ro);
    assert_eq!(b.kind(), CgroupKind::None);
    let why = b.why_none().unwrap_or_default();
    assert!(why.contains("read-only"), "{why}");
    assert!(why.starts_with("no writable memory controller"), "{why}");

    let no_mem: String = MI
        .lines()
        .filter(|l| !l.contains("memory"))
        .map(|l| format!("{l}\n"))
        .collect();
    let b = h.fake.detect_at(CG, &no_mem);
    let why = b.why_none().unwrap_or_default();
    assert!(why.contains("no memory hierarchy mounted"), "{why}");
    assert!(why.contains("root cgroup"), "{why}");

    let forced = h.fake.forced(CgroupKind::V1, CG, &no_mem);
    assert!(forced.is_err());
    let forced = h.fake.forced(CgroupKind::V1, CG, MI);
    assert_eq!(forced.map(|b| b.kind()).ok(), Some(CgroupKind::V1));
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let h = hybrid(Options::default());
    let b = h.fake.detect_at(CG, MI);
    // A leftover in the pids hierarchy only: create fails there, memory/cpuacct are undone.
    std::fs::create_dir(h.pids.join("presize-clash")).expect("mkdir");
    let err = b.create("presize-clash", &CgroupLimits::default());
    assert!(err.is_err());
    assert!(!h.memory.join("presize-clash").exists());
    assert!(!h.cpuacct.join("presize-clash").exists());
    // cleanup_stale finds a name that exists in only one hierarchy.
    let removed = b.cleanup_stale("presize-", &|_| false);
    assert_eq!(removed, vec!["presize-clash".to_string()]);
    assert!(!h.pids.join("presize-clash").exists());
}

#[test]
fn cleanup_stale_kills_and_keeps_live() {
    let h = hybrid(Options::default());
    let b = h.fake.detect_at(CG, MI);
    for name in ["presize-dead", "presize-live", "someone-else"] {
        std::mem::forget(b.create(name, &CgroupLimits::default()).expect("create"));
    }
    for parent in [&h.memory, &h.cpuacct, &h.pids, &h.unified] {
        h.fake
            .write(&parent.join("presize-dead/cgroup.procs"), "727272\n");
    }
    let removed = b.cleanup_stale("presize-", &|n| n == "presize-live");
    assert_eq!(removed, vec!["presize-dead".to_string()]);
    for parent in [&h.memory, &h.cpuacct, &h.pids, &h.unified] {
        assert!(!parent.join("presize-dead").exists());
        assert!(parent.join("presize-live").is_dir());
        assert!(parent.join("someone-else").is_dir());
    }
    assert_eq!(
        h.fake.kill_writes(),
        vec![h.unified.join("presize-dead/cgroup.kill")]
    );
}
