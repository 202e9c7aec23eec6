use std::path::{Path, PathBuf};

use super::super::fakefs::{FakeCgroupFs, Options};
use super::super::{Backend, CgroupError, CgroupKind, CgroupLimits, CgroupStats};
use super::delegation::decide_peer_move;
use super::{MovePeers, V2Options};

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
    fake.detect_at(&format!("0::{own}\n"), MI)
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
        fake.on_mkdir(&sub);
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
    let forced = fake.forced(CgroupKind::V2, "0::/\n", MI);
    assert!(matches!(forced, Err(CgroupError::Unsupported(ref m)) if m.contains("root cgroup")));
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
    let b = fake.detect_at("0::/docker/abc/app\n", mi);
    let Backend::V2(v2) = &b else {
        panic!("{:?}", b.why_none())
    };
    assert_eq!(v2.base(), svc);
    // A cgroup outside the mount's root is not visible.
    let b = fake.detect_at("0::/elsewhere\n", mi);
    assert!(b
        .why_none()
        .unwrap_or_default()
        .contains("outside the mount"));
}

fn detect_with(fake: &FakeCgroupFs, own: &str, move_peers: MovePeers) -> Backend {
    fake.detect_at_with(&format!("0::{own}\n"), MI, &V2Options { move_peers })
}

/// Marks `dir` delegated the way systemd does (`user.delegate` = 1).
fn mark_delegated(dir: &Path) {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    let name = std::ffi::CString::new("user.delegate").expect("name");
    // SAFETY: valid NUL-terminated strings and a 1-byte value.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
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
    assert_eq!(b.kind(), CgroupKind::V2, "{:?}", b.why_none());
    assert!(lines(&fake, &svc.join("cgroup.procs")).is_empty());
    let mut sup = lines(&fake, &svc.join("supervisor/cgroup.procs"));
    sup.sort();
    let mut want = vec!["900001".to_string(), "900002".to_string(), me()];
    want.sort();
    assert_eq!(sup, want);
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
    assert_eq!(b.kind(), CgroupKind::V2, "{:?}", b.why_none());
    let sup = lines(&fake, &svc.join("supervisor/cgroup.procs"));
    for pid in ["900005", "900006", "900007"] {
        assert!(sup.iter().any(|p| p == pid), "{pid} not moved: {sup:?}");
    }
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
