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
