//! Concurrency: many `presize run` processes on one SQLite file, admission under a budget,
//! and a retrain running beside them.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::helper::{stderr, Env};

fn ts(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).expect("RFC 3339 timestamp")
}

fn spawn_run(env: &Env, budget: &str, cap: &str, key: &str, job: &[&str]) -> Child {
    env.cmd()
        .env("PRESIZE_HOST_BUDGET_MB", budget)
        .args(["run", "-q", "--memory-mb", cap, "--job-key", key, "--"])
        .args(job)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_clean_exit(c: Child) {
    let o = c.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let low = err.to_lowercase();
    assert!(
        !low.contains("busy") && !low.contains("locked") && !low.contains("panicked"),
        "{err}"
    );
}

#[test]
fn sixteen_concurrent_runs_times_five_rounds_settle_80_rows_within_budget() {
    let env = Env::with_config("[admission]\npoll_ms = 20\n");
    // Budget 500 MB, caps of 100 MB: at most 5 of the 16 may run at once.
    let (budget, cap) = (500_i64, 100_i64);
    for round in 0..5 {
        let children: Vec<Child> = (0..16)
            .map(|i| {
                spawn_run(
                    &env,
                    &budget.to_string(),
                    &cap.to_string(),
                    &format!("c{}", i % 4),
                    &["sleep", "0.1"],
                )
            })
            .collect();
        for c in children {
            assert_clean_exit(c);
        }
        assert_eq!(env.count(), 16 * (round + 1));
    }
    let rows = env.rows();
    assert_eq!(rows.len(), 80);
    assert!(rows.iter().all(|r| r.outcome.as_deref() == Some("ok")));
    assert!(rows
        .iter()
        .all(|r| r.applied_memory_mb == Some(cap) && r.memory_limit_mb.is_some()));
    // Never over budget: at every start, the jobs running then hold ≤ budget in caps.
    let spans: Vec<(SystemTime, SystemTime)> = rows
        .iter()
        .map(|r| {
            (
                ts(r.started_at.as_deref().unwrap()),
                ts(r.settled_at.as_deref().unwrap()),
            )
        })
        .collect();
    let mut most = 0;
    for (s, _) in &spans {
        let running = spans.iter().filter(|(a, b)| a <= s && s < b).count() as i64;
        assert!(
            running * cap <= budget,
            "{running} jobs of {cap} MB at once"
        );
        most = most.max(running);
    }
    assert!(most >= 2, "jobs never ran concurrently (most {most})");
    let held = env.reservations();
    assert_eq!(held, 0);
    assert!(env.integrity_ok());
}

#[test]
fn retrain_beside_running_jobs_does_not_block_them() {
    // A short busy timeout: a run blocked by the retrain for longer would fail loudly.
    let env = Env::with_config("[store]\nbusy_timeout_ms = 2000\n");
    // 120 settled rows of varied jobs to train on, written 8 at a time.
    for batch in 0..15 {
        let children: Vec<Child> = (0..8)
            .map(|i| {
                let n = 1 + (batch * 8 + i) % 12;
                spawn_run(
                    &env,
                    "4000",
                    "200",
                    &format!("t{}", i % 3),
                    &[
                        "python3",
                        "-c",
                        &format!("x = bytearray({n} << 20); sum(range({n} * 20000))"),
                    ],
                )
            })
            .collect();
        for c in children {
            assert_clean_exit(c);
        }
    }
    assert_eq!(env.count(), 120);
    let retrain = env
        .cmd()
        .args(["retrain", "--min-rows", "100", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut runs = 0;
    // Keep starting jobs while the retrain runs (and at least a few rounds).
    let mut retrain = Some(retrain);
    let mut report = None;
    while runs < 24 || retrain.is_some() {
        let started = Instant::now();
        let children: Vec<Child> = (0..4)
            .map(|i| spawn_run(&env, "4000", "200", &format!("b{i}"), &["true"]))
            .collect();
        for c in children {
            assert_clean_exit(c);
        }
        slowest = slowest.max(started.elapsed());
        runs += 4;
        if let Some(r) = retrain.as_mut() {
            if r.try_wait().unwrap().is_some() {
                report = retrain.take().map(|r| r.wait_with_output().unwrap());
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "retrain never ended"
        );
    }
    let o = report.expect("retrain report");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("retrain --json");
    assert_eq!(v["status"], "promoted", "{v}");
    // Each round of 4 runs takes well under the 2 s busy timeout plus its own work.
    assert!(
        slowest < Duration::from_secs(8),
        "runs were blocked for {slowest:?}"
    );
    assert_eq!(env.count(), 120 + runs as i64);
    assert!(env.integrity_ok());
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a process this test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn waiting(env: &Env) -> i64 {
    env.conn()
        .query_row(
            "SELECT count(*) FROM reservation WHERE state = 'waiting'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
}

#[test]
fn a_stopped_waiter_does_not_block_the_queue() {
    let env = Env::new();
    let blocker = spawn_run(&env, "1000", "800", "blocker", &["sleep", "60"]);
    wait_for("the blocker to start", 20, || env.first_started());
    // A waiter reaches the head of the queue, then is stopped (SIGSTOP, a debugger, a frozen
    // cgroup): it no longer polls.
    let stopped = spawn_run(&env, "1000", "500", "stopped", &["true"]);
    wait_for("the waiter to queue", 20, || waiting(&env) == 1);
    signal(stopped.id(), libc::SIGSTOP);
    signal(blocker.id(), libc::SIGTERM);
    let o = blocker.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{}", stderr(&o));
    // The budget is free: a later job must not wait behind the stopped head.
    let t0 = Instant::now();
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1000")
        .args([
            "run",
            "-q",
            "--memory-mb",
            "300",
            "--queue-timeout",
            "20",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let waited = t0.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    // The stopped waiter keeps its reservation and runs once it is continued.
    assert_eq!(waiting(&env), 1);
    signal(stopped.id(), libc::SIGCONT);
    assert_clean_exit(stopped);
    assert_eq!(env.reservations(), 0);
    let outcomes: Vec<_> = env.rows().into_iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Some("failed".into()), Some("ok".into()), Some("ok".into())]
    );
}

#[test]
fn absurd_reservations_left_by_an_old_version_do_not_break_admission() {
    let env = Env::new();
    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Two rows as an older presize stored `--memory-mb 9223372036854775807`, held by a live
    // process (this test).
    let me = std::process::id();
    let start = presize::executor::proc_start_ticks(me).map(|s| s as i64);
    let host = presize::runner::hostname();
    for _ in 0..2 {
        env.conn()
            .execute(
                "INSERT INTO reservation (host, pid, pid_start, memory_mb, predicted_mb,
                    priority, state, created_at) VALUES (?1, ?2, ?3, ?4, 1.0, 1, 'running', '')",
                rusqlite::params![host, me, start, i64::MAX],
            )
            .unwrap();
    }
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1000")
        .args([
            "run",
            "-q",
            "--memory-mb",
            "100",
            "--queue-timeout",
            "1",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    // Not "integer overflow" (exit 4): the ledger is full, so the queue timeout applies.
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("waited"), "{err}");
    assert!(!err.contains("overflow"), "{err}");
}

/// A pid that does not exist in this (the host's) PID namespace, well away from where new
/// pids are being handed out.
fn dead_host_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let gone = |p: u32| !std::path::Path::new(&format!("/proc/{p}")).exists();
    (1000..max - 100)
        .rev()
        .find(|&p| (p.abs_diff(last) > 2000) && (p..p + 4).all(gone))
        .expect("a free pid range")
}

#[test]
fn presize_in_another_pid_namespace_keeps_its_job_and_row() {
    if !crate::helper::cgroup_tests_can_run() {
        return;
    }
    let unshare_ok = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !unshare_ok {
        if std::env::var_os("PRESIZE_REQUIRE_CGROUP_TESTS").is_some_and(|v| v == "1") {
            panic!("`unshare -p -f --mount-proc` is required as root and failed");
        }
        eprintln!("skipped: `unshare -p -f --mount-proc` is not available");
        return;
    }
    let env = Env::new();
    // Inside the namespace presize gets a pid that is free out here, so "pid not alive in my
    // namespace" would wrongly call it dead.
    let inner_pid = dead_host_pid();
    let inner = format!(
        "echo {} > /proc/sys/kernel/ns_last_pid; {} run -q --memory-mb 100 -- sleep 300",
        inner_pid - 1,
        env!("CARGO_BIN_EXE_presize")
    );
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(["-p", "-f", "--mount-proc", "sh", "-c", &inner])
        .env("PRESIZE_DB", &env.db)
        .env("PRESIZE_MODEL_DIR", &env.models)
        .env("PRESIZE_CONFIG", &env.config)
        .env("PRESIZE_HOST_BUDGET_MB", "1000")
        .env("HOME", env.dir.path())
        .stderr(Stdio::piped());
    let ns = unshare.spawn().unwrap();
    wait_for("the namespaced job to start", 30, || env.first_started());
    let inner_row = env.rows()[0].clone();
    let cg: Vec<String> = crate::helper::cgroup_dirs_of(inner_pid);
    assert!(
        !cg.is_empty(),
        "the namespaced presize did not run as pid {inner_pid}"
    );
    let job_pids = |dir: &str| -> Vec<i32> {
        std::fs::read_to_string(format!("{dir}/cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let before = job_pids(&cg[0]);
    assert_eq!(before.len(), 1, "{before:?}");

    // A presize out here, same database and cgroup hierarchy, cleans up at start.
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1000")
        .args(["run", "-q", "--memory-mb", "100", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !crate::helper::process_gone(before[0]),
        "the other namespace's job was killed"
    );
    assert_eq!(job_pids(&cg[0]), before, "its cgroup was emptied");
    let row = &env.rows()[0];
    assert_eq!(row.id, inner_row.id);
    assert!(
        row.settled_at.is_none(),
        "its row was settled as {:?}",
        row.outcome
    );

    // The namespaced presize settles its own job when told to stop.
    let presize_host_pid: i32 = std::fs::read_to_string(format!("/proc/{}/stat", before[0]))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 2..].to_string();
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .expect("parent of the job");
    signal(presize_host_pid as u32, libc::SIGTERM);
    let o = ns.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{}", stderr(&o));
    let row = &env.rows()[0];
    assert_eq!(row.outcome.as_deref(), Some("failed"));
    assert!(crate::helper::cgroup_dirs_of(inner_pid).is_empty());
    assert_eq!(env.reservations(), 0);
}
