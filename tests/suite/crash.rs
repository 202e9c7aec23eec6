//! Crash safety: `kill -9` of `presize run` while its job runs, and while a write transaction
//! is open. Nothing is left running, no cgroup or reservation stays behind, no row is lost or
//! half-written, and the database stays intact.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::helper::{cgroup_dirs, cgroup_tests_can_run, process_gone, stderr, Env};

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(p: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn sigkill(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    child.wait().unwrap();
}

#[test]
fn kill_9_of_presize_leaves_nothing_behind_after_the_next_start() {
    let cgroups = cgroup_tests_can_run();
    let env = Env::new();
    let (same_group, escaped) = (env.path("child.pid"), env.path("setsid.pid"));
    // The job starts a child in its process group and one that leaves it with setsid.
    let script = format!(
        "sleep 300 & echo $! > {}; setsid sleep 301 & echo $! > {}; wait",
        same_group.display(),
        escaped.display()
    );
    let mut presize = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1000")
        .args(["run", "-q", "--memory-mb", "200", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the job's children", 20, || {
        read_pid(&same_group).is_some() && read_pid(&escaped).is_some()
    });
    let (p1, p2) = (read_pid(&same_group).unwrap(), read_pid(&escaped).unwrap());
    let presize_pid = presize.id();
    let prefix = format!("presize-{presize_pid}-");
    if cgroups {
        assert!(!cgroup_dirs(&prefix).is_empty(), "the job has no cgroup");
    }
    let held = env.reservations();
    assert_eq!(held, 1);

    sigkill(&mut presize);
    // The executor is gone; its job is not (nobody has cleaned up yet).
    assert!(
        !process_gone(p1),
        "nothing to clean up: the job died with presize"
    );

    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = env.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].outcome.as_deref(), Some("lost"));
    assert!(rows[0].settled_at.is_some());
    assert_eq!(rows[1].outcome.as_deref(), Some("ok"));
    wait_until("the orphaned processes to die", 5, || {
        process_gone(p1) && (!cgroups || process_gone(p2))
    });
    if cgroups {
        assert_eq!(cgroup_dirs(&prefix), Vec::<String>::new(), "cgroup left");
    } else {
        // Without a cgroup a setsid escapee cannot be found; clean up after the test.
        // SAFETY: plain kill(2).
        unsafe { libc::kill(p2, libc::SIGKILL) };
    }
    let held = env.reservations();
    assert_eq!(held, 0, "a reservation of the dead executor is still held");
    assert!(env.integrity_ok());
}

/// `presize run` with a failpoint that pauses inside the named write transaction.
fn run_with_failpoint(env: &Env, point: &str) -> Child {
    env.cmd()
        .env("PRESIZE_FAILPOINT", format!("{point}:5000"))
        .args(["run", "-q", "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Read stderr until the failpoint says the transaction is open.
fn wait_in_transaction(child: &mut Child) {
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("failpoint") {
            return;
        }
    }
    panic!("presize ended without reaching the failpoint");
}

#[test]
fn kill_9_inside_write_transactions_50_times_loses_nothing() {
    let env = Env::new();
    let o = env.run(&["run", "-q", "--job-key", "earlier", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let earlier = env.rows();
    let points = ["insert", "start", "settle"];
    let mut expect_rows = earlier.len();
    for i in 0..50 {
        let point = points[i % points.len()];
        let mut child = run_with_failpoint(&env, point);
        wait_in_transaction(&mut child);
        sigkill(&mut child);
        let rows = env.rows();
        // An insert killed before its commit leaves no row; the others leave exactly one.
        if point != "insert" {
            expect_rows += 1;
        }
        assert_eq!(rows.len(), expect_rows, "kill {i} in {point}");
        let last = rows.last().unwrap();
        match point {
            "insert" => {}
            // The start was rolled back: the row is recorded, the start time is not.
            "start" => assert!(last.started_at.is_none() && last.settled_at.is_none()),
            // The settlement was rolled back: a started row without any actual.
            _ => assert!(
                last.started_at.is_some()
                    && last.settled_at.is_none()
                    && last.outcome.is_none()
                    && last.actual_wall_s.is_none(),
                "half-written settlement: {last:?}"
            ),
        }
        assert!(env.integrity_ok(), "integrity after kill {i} in {point}");
    }
    // The next start settles every dangling row as lost; earlier rows are untouched.
    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = env.rows();
    assert_eq!(rows.len(), expect_rows + 1);
    assert_eq!(rows[0].settled_at, earlier[0].settled_at);
    assert_eq!(rows[0].outcome.as_deref(), Some("ok"));
    let lost = rows
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("lost"))
        .count();
    assert_eq!(lost, expect_rows - earlier.len());
    assert!(rows
        .iter()
        .all(|r| r.settled_at.is_some() && r.outcome.is_some()));
    for r in &rows {
        let v: serde_json::Value = serde_json::from_str(&r.features).expect("features JSON");
        assert!(v.as_object().is_some_and(|m| !m.is_empty()), "{r:?}");
    }
    let held = env.reservations();
    assert_eq!(held, 0);
    assert!(env.integrity_ok());
}
