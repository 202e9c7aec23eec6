//! `presize run`: real processes, settled rows, timeouts, concurrency, dry run, lost rows.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helper::{process_gone, repo, stderr, Env};

#[test]
fn example_job_runs_and_settles_one_row() {
    let env = Env::new();
    let script = repo("examples/jobs/simulate_cells.py");
    let o = env
        .cmd()
        .args(["run", "--", "python3"])
        .arg(&script)
        .args(["--cells", "2000", "--genes", "50"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("predicted peak"), "{err}");
    assert!(err.contains("limits"), "{err}");
    assert!(err.contains("peak") && err.contains("cpu"), "{err}");
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.outcome.as_deref(), Some("ok"));
    assert_eq!(r.attempt, 1);
    assert_eq!(r.exit_code, Some(0));
    assert!(r.settled_at.is_some() && r.started_at.is_some());
    // A Python interpreter doing real work: a few MB of RSS at least, some CPU.
    assert!(r.actual_rss_mb.unwrap() > 5.0, "{r:?}");
    assert!(r.actual_cpu_s.unwrap() > 0.0, "{r:?}");
    assert!(r.actual_wall_s.unwrap() > 0.0, "{r:?}");
    // The prior's confidence is below the threshold: the static defaults applied, so the
    // row does not claim the prediction's limits were enforced.
    assert!(!r.enforced && !r.dry_run);
    assert!(r.model_version.starts_with("prior-"));
    let features: serde_json::Value = serde_json::from_str(&r.features).unwrap();
    assert_eq!(features["lang_python"], 1.0);
    // Timestamps are RFC 3339 UTC.
    assert!(r.predicted_at.ends_with('Z') && r.predicted_at.contains('T'));
}

#[test]
fn exit_code_passes_through_and_failure_is_recorded() {
    let env = Env::new();
    let o = env.run(&["run", "-q", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = env.run(&["run", "-q", "--", "sh", "-c", "kill -USR1 $$"]);
    assert_eq!(o.status.code(), Some(128 + libc::SIGUSR1));
    let rows = env.rows();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.outcome.as_deref() == Some("failed") && r.settled_at.is_some()));
    assert_eq!(rows[0].exit_code, Some(7));
}

#[test]
fn timeout_kills_the_whole_tree_and_exits_124() {
    let env = Env::with_config("[policy]\ngrace_period_s = 1\n");
    let pidfile = env.path("grandchild.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; sh -c 'sleep 301' & wait",
        pidfile.display()
    );
    let t0 = Instant::now();
    let o = env.run(&["run", "--timeout", "1", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(30));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(process_gone(pid), "grandchild {pid} survived");
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome.as_deref(), Some("timed_out"));
    assert_eq!(rows[0].applied_timeout_s, Some(1));
    // Not retried by default.
    assert_eq!(rows[0].attempt, 1);
}

#[test]
fn eight_concurrent_runs_settle_eight_rows() {
    let env = Env::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            env.cmd()
                .args(["run", "--job-key", &format!("conc-{}", i % 3), "--"])
                .args([
                    "python3",
                    "-c",
                    "import time; x = bytearray(8 << 20); time.sleep(0.3)",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        let low = err.to_lowercase();
        assert!(!low.contains("busy") && !low.contains("locked"), "{err}");
    }
    let rows = env.rows();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r.outcome.as_deref() == Some("ok")));
    assert!(env.integrity_ok());
}

#[test]
fn dry_run_records_predicted_limits_and_applies_static_defaults() {
    // The original formula (`headroom`) tightens on the prior once the threshold is 0; the
    // default engine never tightens on the prior alone (see `suite::learning`).
    let env = Env::with_config(
        "[policy]\nlimit_mode = \"headroom\"\nconfidence_threshold = 0.0\ndefault_memory_mb = 4000\n",
    );
    let o = env
        .cmd()
        .env("PRESIZE_DRY_RUN", "1")
        .args(["run", "-q", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = env.run(&["run", "-q", "--dry-run", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let rows = env.rows();
    assert_eq!(rows.len(), 3);
    for r in &rows[..2] {
        assert!(r.dry_run && !r.enforced, "{r:?}");
        assert_eq!(r.applied_memory_mb, Some(4000));
        // With the threshold at 0 the predicted limit follows the prior (≥ the 64 MB floor).
        assert!(r.memory_limit_mb.unwrap() < 4000, "{r:?}");
    }
    let r = &rows[2];
    assert!(!r.dry_run && r.enforced);
    assert_eq!(r.applied_memory_mb, r.memory_limit_mb);
}

#[test]
fn rows_of_a_killed_executor_become_lost() {
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["run", "-q", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    // Wait until the row is started.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if env.first_started() {
            break;
        }
        assert!(Instant::now() < deadline, "job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let job_pid: i64 = env
        .conn()
        .query_row("SELECT job_pid FROM resource_prediction", [], |r| r.get(0))
        .unwrap();
    child.kill().unwrap(); // SIGKILL: no chance to settle
    child.wait().unwrap();
    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = env.rows();
    assert_eq!(rows[0].outcome.as_deref(), Some("lost"));
    assert!(rows[0].settled_at.is_some());
    assert_eq!(rows[1].outcome.as_deref(), Some("ok"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(job_pid as i32) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        process_gone(job_pid as i32),
        "orphaned job {job_pid} still runs"
    );
}

#[test]
fn stats_reports_accuracy_and_outcomes() {
    let env = Env::new();
    for n in [1, 2, 3] {
        let code = format!("x = bytearray({n} << 20)");
        let o = env.run(&["run", "-q", "--job-key", "s", "--", "python3", "-c", &code]);
        assert_eq!(o.status.code(), Some(0));
    }
    let o = env.run(&["run", "-q", "--", "false"]);
    assert_eq!(o.status.code(), Some(1));
    let o = env.run(&["stats", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["jobs"], 4);
    assert_eq!(v["outcomes"]["ok"], 3);
    assert_eq!(v["outcomes"]["failed"], 1);
    let t = &v["targets"][0];
    assert_eq!(t["target"], "peak_rss_mb");
    assert_eq!(t["n"], 3);
    assert!(t["mape"].as_f64().is_some() && t["median_ape"].as_f64().is_some());
    assert!(!v["by_model_version"].as_array().unwrap().is_empty());
    let o = env.run(&["stats", "--by", "job-key"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(crate::helper::stdout(&o).contains("R²"));
}

#[test]
fn manifestly_impossible_job_is_rejected_before_running() {
    let env = Env::new();
    let script = env.path("huge.py");
    let marker = env.path("ran");
    std::fs::write(
        &script,
        format!(
            "import tensorflow as tf\nopen({:?}, 'w').write('x')\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    // Importing tensorflow alone needs far more than 50 MB.
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "50")
        .args(["run", "--", "python3"])
        .arg(&script)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("rejected") && err.contains("50 MB"), "{err}");
    assert!(!marker.exists(), "the job ran");
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome.as_deref(), Some("rejected"));
    assert!(rows[0].settled_at.is_some() && rows[0].started_at.is_none());
}
