//! Crash safety: `kill -9` of `presize run` while its job runs, and while a write transaction
//! is open. Nothing is left running, no cgroup or reservation stays behind, no row is lost or
//! half-written, and the database stays intact.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::helper::{cgroup_dirs_of, cgroup_tests_can_run, process_gone, stderr, Env};

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
    if cgroups {
        assert!(
            !cgroup_dirs_of(presize_pid).is_empty(),
            "the job has no cgroup"
        );
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
        assert_eq!(
            cgroup_dirs_of(presize_pid),
            Vec::<String>::new(),
            "cgroup left"
        );
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

/// (outcome, actual_rss_mb, charged_peak_mb, oom_events, exit_code) of one row.
type Measured = (
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<i64>,
);

/// [`Measured`] of every row.
fn measured(env: &Env) -> Vec<Measured> {
    let conn = env.conn();
    let mut st = conn
        .prepare(
            "SELECT outcome, actual_rss_mb, charged_peak_mb, oom_events, exit_code
             FROM resource_prediction ORDER BY id",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

#[test]
fn a_child_oom_kill_under_a_job_that_exits_0_is_ok_and_not_rerun() {
    if !cgroup_tests_can_run() {
        return;
    }
    let env = Env::new();
    let runs = env.path("runs");
    // The job's side effect must happen once; its child is OOM-killed, the job exits 0.
    let script = format!(
        "echo run >> {}; python3 -c \"b = b'x' * (300 << 20)\"; echo child=$?; exit 0",
        runs.display()
    );
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1000")
        .args(["run", "--memory-mb", "100", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("child=137"),
        "the child was not OOM-killed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "re-run");
    let rows = measured(&env);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.as_deref(), Some("ok"));
    assert!(rows[0].3.unwrap_or(0) >= 1, "oom_events {:?}", rows[0].3);
    assert!(err.contains("OOM-killed"), "{err}");
}

#[test]
fn page_cache_is_not_what_a_job_needs() {
    if !cgroup_tests_can_run() {
        return;
    }
    for cap in ["3000", "300"] {
        let env = Env::new();
        let out = env.path("big");
        let o = env
            .cmd()
            .env("PRESIZE_HOST_BUDGET_MB", "4000")
            .args(["run", "-q", "--memory-mb", cap, "--", "dd", "if=/dev/zero"])
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "count=1500", "status=none"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(o.status.code(), Some(0), "cap {cap}: {}", stderr(&o));
        let rows = measured(&env);
        let (outcome, need, charged, oom, _) = &rows[0];
        eprintln!(
            "dd 1.5 GB under {cap} MB: need {need:?} MB, charged {charged:?} MB, oom {oom:?}"
        );
        assert_eq!(outcome.as_deref(), Some("ok"));
        let need = need.expect("need measured");
        assert!(need <= 50.0, "cap {cap}: recorded need {need} MB");
        let charged = charged.expect("charged peak measured");
        assert!(charged >= 250.0, "cap {cap}: charged {charged} MB");
    }
}

#[test]
fn disk_full_keeps_the_jobs_exit_code() {
    if !cgroup_tests_can_run() {
        return;
    }
    let env = Env::new();
    let mnt = env.path("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let db = mnt.join("p.db");
    let run = |args: &[&str]| {
        env.cmd()
            .env("PRESIZE_DB", &db)
            .arg("run")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The job fills the file system, then exits 3.
    let fill = mnt.join("fill");
    let o = run(&[
        "-q",
        "--",
        "sh",
        "-c",
        &format!("cat /dev/zero > {} 2>/dev/null; exit 3", fill.display()),
    ]);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(3),
        "the job's exit code was hidden: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.trim_end().lines().count() <= 1, "{err:?}");
    std::fs::remove_file(&fill).unwrap();
    assert!(err.contains("is kept in"), "{err}");
    // Space is back: the next run records the spooled result of the full-disk attempt.
    let o = run(&["-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (outcome, code, wall): (Option<String>, Option<i64>, Option<f64>) = conn
        .query_row(
            "SELECT outcome, exit_code, actual_wall_s FROM resource_prediction WHERE id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(outcome.as_deref(), Some("failed"), "{err}");
    assert_eq!(code, Some(3));
    assert!(wall.is_some(), "actuals lost");
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".settle-"))
        .collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}
