//! Tests against the real kernel; they need root and a cgroup backend that enforces memory.
//! Set `PRESIZE_REQUIRE_CGROUP_TESTS=1` (CI) to turn a skip into a failure.

use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::time::Duration;

use super::fs::read_u64;
use super::*;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const MIB: u64 = 1 << 20;

fn can_run() -> Option<Backend> {
    let why = if unsafe { libc::geteuid() } != 0 {
        "not root".to_string()
    } else {
        let b = Backend::detect_with(&V2Options::default());
        match b.why_none() {
            None => return Some(b),
            Some(r) => r.to_string(),
        }
    };
    if std::env::var_os("PRESIZE_REQUIRE_CGROUP_TESTS").is_some_and(|v| v == "1") {
        panic!("real-kernel cgroup test cannot run: {why}");
    }
    eprintln!("skipped: real-kernel cgroup test: {why}");
    None
}

fn name(test: &str) -> String {
    format!("presize-test-{test}-{}", std::process::id())
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Spawns `cmd` placed into `job` by `pre_exec` (race-free), in its own process group.
fn spawn_in(job: &JobCgroup, cmd: &mut Command) -> Child {
    let fds: Vec<RawFd> = job.procs_fds().to_vec();
    // SAFETY: the closure only calls write(2) on fds that stay open in the parent until
    // the child has exec'd (JobCgroup outlives the spawn); no allocation after fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.process_group(0).spawn().expect("spawn")
}

/// The process is gone or a zombie (reparented to an init that has not reaped it yet).
fn gone_or_zombie(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_for_pids(job: &JobCgroup, n: usize) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let pids = job.pids().expect("pids");
        if pids.len() >= n || start.elapsed() > Duration::from_secs(5) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn oom_kill_at_cap() {
    let Some(b) = can_run() else { return };
    let limits = CgroupLimits {
        memory_bytes: Some(100 * MIB),
        pids_max: None,
    };
    let job = b.create(&name("oom"), &limits).expect("create");
    assert!(job.applied().memory_bytes.is_some());
    let script = "b=bytearray(300*1024*1024); b[::4096]=b'x'*len(b[::4096])";
    let status = spawn_in(
        &job,
        Command::new(python())
            .args(["-c", script])
            .stderr(Stdio::null()),
    )
    .wait()
    .expect("wait");
    let s = job.stats();
    eprintln!(
        "oom: status={status:?} peak={:?} MiB oom_killed={} cpu_ns={:?} applied={:?}",
        s.peak_bytes.map(|p| p as f64 / MIB as f64),
        s.oom_killed,
        s.cpu_ns,
        job.applied()
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(s.oom_killed);
    let peak = s.peak_bytes.expect("peak measured");
    assert!((90 * MIB..=101 * MIB).contains(&peak), "peak {peak}");
    job.remove().expect("remove");
}

#[test]
fn job_under_cap_runs_and_is_measured() {
    let Some(b) = can_run() else { return };
    let limits = CgroupLimits {
        memory_bytes: Some(200 * MIB),
        pids_max: Some(64),
    };
    let job = b.create(&name("ok"), &limits).expect("create");
    let script = "b=bytearray(50*1024*1024); b[::4096]=b'x'*len(b[::4096]); sum(range(3*10**6))";
    let status = spawn_in(&job, Command::new(python()).args(["-c", script]))
        .wait()
        .expect("wait");
    let s = job.stats();
    eprintln!(
        "ok: status={status:?} peak={:?} MiB oom_killed={} cpu={:?} s",
        s.peak_bytes.map(|p| p as f64 / MIB as f64),
        s.oom_killed,
        s.cpu_ns.map(|c| c as f64 / 1e9)
    );
    assert!(status.success(), "{status:?}");
    assert!(!s.oom_killed);
    assert!(s.peak_bytes.expect("peak") >= 50 * MIB);
    assert!(s.peak_bytes.expect("peak") < 200 * MIB);
    assert!(s.cpu_ns.expect("cpu") > 0);
    assert!(job.is_empty());
    let paths = job.paths();
    job.remove().expect("remove");
    assert!(paths.iter().all(|p| !p.exists()));
}

#[test]
fn kill_all_catches_setsid_escapee() {
    let Some(b) = can_run() else { return };
    let job = b
        .create(&name("setsid"), &CgroupLimits::default())
        .expect("create");
    let mut child = spawn_in(
        &job,
        Command::new("sh").args(["-c", "setsid sleep 1000 & sleep 1000"]),
    );
    // Wait until the escapee has really called setsid(2) (it is briefly a plain fork).
    let child_sid = unsafe { libc::getsid(child.id() as i32) };
    let start = Instant::now();
    let (pids, sessions) = loop {
        let pids = job.pids().expect("pids");
        let sessions: Vec<i32> = pids.iter().map(|&p| unsafe { libc::getsid(p) }).collect();
        let escaped = sessions.iter().any(|&s| s > 0 && s != child_sid);
        if (pids.len() >= 2 && escaped) || start.elapsed() > Duration::from_secs(5) {
            break (pids, sessions);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "setsid: pids={pids:?} sessions={sessions:?} (job session {child_sid}) dirs={}",
        job.paths().len()
    );
    assert!(
        sessions.iter().any(|&s| s > 0 && s != child_sid),
        "no process left the session: {sessions:?}"
    );
    job.kill_all().expect("kill_all");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for &pid in &pids {
        assert!(gone_or_zombie(pid), "pid {pid} survived");
    }
    assert!(job.is_empty());
    let paths = job.paths();
    job.remove().expect("remove");
    for p in paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn pids_max_stops_fork_bomb() {
    let Some(b) = can_run() else { return };
    let limits = CgroupLimits {
        memory_bytes: Some(256 * MIB),
        pids_max: Some(32),
    };
    let job = b.create(&name("forkbomb"), &limits).expect("create");
    if job.applied().pids_max.is_none() {
        eprintln!("skipped: no pids controller");
        return;
    }
    let pids_dir = job
        .paths()
        .into_iter()
        .find(|p| p.join("pids.current").exists())
        .expect("pids dir");
    // stderr to a file: the surviving sleeps would keep a pipe open.
    let err_file = tempfile::NamedTempFile::new().expect("tempfile");
    let stderr = err_file.reopen().expect("reopen");
    let script = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait";
    let mut child = spawn_in(&job, Command::new("sh").args(["-c", script]).stderr(stderr));
    let mut max_seen = 0u64;
    let start = Instant::now();
    let status = loop {
        max_seen = max_seen.max(read_u64(&pids_dir.join("pids.current")).unwrap_or(0));
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let left = job.pids().expect("pids").len();
    let events = fs::read_to_string(pids_dir.join("pids.events")).unwrap_or_default();
    let stderr_text = fs::read_to_string(err_file.path()).unwrap_or_default();
    eprintln!(
        "forkbomb: status={status:?} max pids.current={max_seen} procs left={left} \
         pids.events={:?} stderr={:?}",
        events.trim(),
        stderr_text.lines().next()
    );
    job.kill_all().expect("kill_all");
    if status.is_none() {
        let _ = child.wait();
    }
    assert!(
        stderr_text.contains("Cannot fork")
            || stderr_text.contains("Resource temporarily unavailable"),
        "{stderr_text}"
    );
    assert!(max_seen <= 32, "{max_seen}");
    assert!(left <= 32, "{left}");
    assert!(job.is_empty());
    job.remove().expect("remove");
    assert!(!pids_dir.exists());
}

/// Removes every `prefix*` cgroup on drop, even when the test fails.
struct StaleGuard<'a>(&'a Backend, String);

impl Drop for StaleGuard<'_> {
    fn drop(&mut self) {
        self.0.cleanup_stale(&self.1, &|_| false);
    }
}

#[test]
fn cleanup_stale_kills_leftovers_but_keeps_live() {
    let Some(b) = can_run() else { return };
    let prefix = format!("presize-test-stale-{}-", std::process::id());
    let guard = StaleGuard(&b, prefix.clone());
    let limits = CgroupLimits {
        memory_bytes: Some(64 * MIB),
        pids_max: Some(16),
    };
    let dead = b.create(&format!("{prefix}dead"), &limits).expect("create");
    let live = b.create(&format!("{prefix}live"), &limits).expect("create");
    let mut dead_child = spawn_in(&dead, Command::new("sleep").arg("1000"));
    let mut live_child = spawn_in(&live, Command::new("sleep").arg("1000"));
    wait_for_pids(&dead, 1);
    wait_for_pids(&live, 1);
    let (dead_paths, live_paths) = (dead.paths(), live.paths());
    // Simulate a crashed executor: nobody removes them.
    std::mem::forget(dead);
    std::mem::forget(live);

    let removed = b.cleanup_stale(&prefix, &|n| n.ends_with("-live"));
    eprintln!("cleanup_stale: removed={removed:?}");
    assert_eq!(removed, vec![format!("{prefix}dead")]);
    assert_eq!(
        dead_child.wait().expect("wait").signal(),
        Some(libc::SIGKILL)
    );
    assert!(dead_paths.iter().all(|p| !p.exists()));
    assert!(live_paths.iter().all(|p| p.is_dir()));
    assert!(
        live_child.try_wait().expect("try_wait").is_none(),
        "live job untouched"
    );

    drop(guard);
    assert_eq!(
        live_child.wait().expect("wait").signal(),
        Some(libc::SIGKILL)
    );
    assert!(live_paths.iter().all(|p| !p.exists()));
}

#[test]
fn drop_without_remove_cleans_up() {
    let Some(b) = can_run() else { return };
    let job = b
        .create(&name("drop"), &CgroupLimits::default())
        .expect("create");
    let mut child = spawn_in(&job, Command::new("sleep").arg("1000"));
    wait_for_pids(&job, 1);
    let paths = job.paths();
    assert_eq!(job.procs_fds().len(), paths.len());
    drop(job);
    assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    assert!(paths.iter().all(|p| !p.exists()));
}

#[test]
fn prewarm_migrates_presize_into_its_own_cgroup_until_stopped() {
    let Some(b) = can_run() else { return };
    let Backend::V1(v1) = &b else {
        eprintln!("skipped: not a cgroup v1 host");
        return;
    };
    let before = fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let warm = v1.prewarm();
    let start = Instant::now();
    while warm.migrations() < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    warm.stop();
    let done = warm.migrations();
    assert!(done >= 3, "only {done} no-op migrations in 5 s");
    std::thread::sleep(Duration::from_millis(50));
    let after_stop = warm.migrations();
    assert!(
        after_stop <= done + 1,
        "{done} then {after_stop}: did not stop"
    );
    // A no-op: this process is still where it was, in every hierarchy.
    assert_eq!(
        fs::read_to_string("/proc/self/cgroup").expect("cgroup"),
        before
    );
}
