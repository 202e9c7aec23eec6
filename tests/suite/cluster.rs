//! The SLURM backend against a real cluster (scripts/slurm-up.sh; `.ci/run` starts it when
//! root). Skipped with a reason elsewhere, unless PRESIZE_REQUIRE_SLURM_TESTS=1.
//!
//! One test drives every scenario at once (jobs of different scenarios run side by side on
//! the cluster, so the slowest — a job past its whole-minute time limit — bounds the cost),
//! then checks nothing of the jobs is left: no slurmstepd, no job processes, no job cgroups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helper::{stderr, stdout, Env};

fn slurm_conf() -> Option<PathBuf> {
    std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/tmp/presize-slurm/etc/slurm.conf")))
        .filter(|p| p.is_file())
}

fn cluster_available() -> Result<PathBuf, String> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (the test cluster runs as root)".into());
    }
    let conf = slurm_conf().ok_or("no cluster: run scripts/slurm-up.sh (SLURM_CONF unset)")?;
    // `timeout`: against a stopped controller sinfo retries for a long time.
    let out = Command::new("timeout")
        .args(["5", "sinfo", "-h", "-o", "%t"])
        .env("SLURM_CONF", &conf)
        .output()
        .map_err(|e| format!("no SLURM client tools: {e}"))?;
    let states = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || !states.lines().any(|s| {
            ["idle", "mix", "alloc", "comp"]
                .iter()
                .any(|ok| s.trim_end_matches(['*', '~', '#', '$', '@', '+', '-']) == *ok)
        })
    {
        return Err(format!(
            "cluster at {} not up (sinfo: {:?} {})",
            conf.display(),
            states.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(conf)
}

macro_rules! require_slurm {
    () => {
        match cluster_available() {
            Ok(conf) => conf,
            Err(why) => {
                if std::env::var_os("PRESIZE_REQUIRE_SLURM_TESTS").is_some_and(|v| v == "1") {
                    panic!("SLURM tests required but cannot run: {why}");
                }
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

fn cmd(env: &Env, conf: &Path) -> Command {
    let mut c = env.cmd();
    c.env("SLURM_CONF", conf).current_dir(env.dir.path());
    c
}

fn q<T: rusqlite::types::FromSql>(env: &Env, sql: &str) -> Vec<T> {
    let conn = env.conn();
    let mut st = conn.prepare(sql).unwrap();
    let rows = st
        .query_map([], |r| r.get::<_, T>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// A job that fits: settled `ok` with the peak within 10 % of the truth (the same command
/// measured by the local cgroup backend); arguments reach it unchanged; `stats --by backend`
/// shows the local and the SLURM job side by side.
fn fits(conf: &Path) -> Vec<String> {
    let env = Env::with_config("[policy]\ndefault_memory_mb = 1024\n");
    let code = "import sys, time\nx = b'x' * (200 << 20)\ntime.sleep(3)\nprint(sys.argv[1:])";
    let nasty = ["a b", "$(touch pwned)", "'", "\"; exit 3"];
    let local = cmd(&env, conf)
        .args(["run", "-q", "--job-key", "fit", "--", "python3", "-c", code])
        .args(nasty)
        .output()
        .unwrap();
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    let truth: f64 = q(&env, "SELECT actual_rss_mb FROM resource_prediction")[0];
    assert!(truth > 200.0 && truth < 260.0, "local peak {truth}");
    let o = cmd(&env, conf)
        .args([
            "run",
            "--backend",
            "slurm",
            "--wait",
            "--job-key",
            "fit",
            "--",
        ])
        .args(["python3", "-c", code])
        .args(nasty)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let ids: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].parse::<u64>().is_ok(), "{ids:?}");
    let conn = env.conn();
    let (outcome, peak, sacct_peak, source, state, backend, out_file, sid): (
        String,
        f64,
        f64,
        String,
        String,
        String,
        String,
        String,
    ) = conn
        .query_row(
            "SELECT outcome, actual_rss_mb, slurm_max_rss_mb, measure_source, slurm_state,
                    backend, slurm_output, slurm_job_id
             FROM resource_prediction WHERE backend = 'slurm'",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .unwrap();
    assert_eq!((outcome.as_str(), state.as_str()), ("ok", "COMPLETED"));
    assert_eq!(backend, "slurm");
    assert_eq!(sid, ids[0]);
    assert_eq!(source, "slurm-wrapper-cgroup");
    assert!(
        (peak - truth).abs() / truth < 0.10,
        "peak {peak} vs truth {truth}"
    );
    assert!(
        (sacct_peak - truth).abs() / truth < 0.10,
        "sacct MaxRSS {sacct_peak} vs truth {truth}"
    );
    assert!(err.contains(&out_file), "output file not named: {err}");
    let printed = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(
        printed.trim(),
        r#"['a b', '$(touch pwned)', "'", '"; exit 3']"#
    );
    assert!(!env.path("pwned").exists());
    let o = env.run(&["stats", "--by", "backend", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.contains(&"slurm") && keys.iter().any(|k| k.starts_with("cgroup")),
        "{keys:?}"
    );
    let o = env.run(&["stats", "--by", "backend"]);
    assert!(stdout(&o).contains("backend slurm"), "{}", stdout(&o));
    ids
}

/// A cap too small: OUT_OF_MEMORY → oom_killed → resubmitted with the escalated cap → ok.
fn oom_then_escalated(conf: &Path) -> Vec<String> {
    let env = Env::with_config("[policy]\nescalation_factor = 4.0\n");
    let o = cmd(&env, conf)
        .args([
            "run",
            "--backend",
            "slurm",
            "--wait",
            "--memory-mb",
            "100",
            "--",
        ])
        .args(["python3", "-c", "x = b'x' * (300 << 20)"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        // The engine's one retry rule: nothing is known of this job (evidence `novel`), so
        // the retry goes to the top of its draws, the static default.
        err.contains("OOM-killed at 100 MB; retrying with 8192 MB"),
        "{err}"
    );
    let ids: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let conn = env.conn();
    let mut st = conn
        .prepare(
            "SELECT job_id, attempt, outcome, slurm_state, applied_memory_mb, actual_rss_mb,
                    slurm_job_id, memory_enforced
             FROM resource_prediction ORDER BY id",
        )
        .unwrap();
    type Row = (String, i64, String, String, i64, f64, String, i64);
    let rows: Vec<Row> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, rows[1].0);
    assert_eq!((rows[0].1, rows[1].1), (1, 2));
    assert_eq!(
        (rows[0].2.as_str(), rows[0].3.as_str()),
        ("oom_killed", "OUT_OF_MEMORY")
    );
    assert_eq!(rows[0].4, 100);
    // Censored: at least the cap.
    assert!(rows[0].5 >= 100.0, "{rows:?}");
    assert_eq!(rows[0].7, 1);
    assert_eq!(
        (rows[1].2.as_str(), rows[1].3.as_str()),
        ("ok", "COMPLETED")
    );
    assert_eq!(rows[1].4, 8192);
    assert!(rows[1].5 >= 300.0 && rows[1].5 < 400.0, "{rows:?}");
    assert_eq!(vec![rows[0].6.clone(), rows[1].6.clone()], ids);
    ids
}

/// (attempt, applied_memory_mb, outcome, memory_source, backend) of every row of a key.
type AttemptRow = (i64, i64, Option<String>, String, String);

fn attempts_of(env: &Env, job_key: &str) -> Vec<AttemptRow> {
    let conn = env.conn();
    let mut st = conn
        .prepare(
            "SELECT attempt, applied_memory_mb, outcome, memory_source, backend
             FROM resource_prediction WHERE job_key = ?1 ORDER BY id",
        )
        .unwrap();
    let rows = st
        .query_map([job_key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// The retry rule is changed once, in the config file (`escalation_factor`, `max_attempts`),
/// and every backend follows it: the same job, OOM-killed locally under the cgroup cap, on
/// the cluster under `--mem` with `run --wait`, and on the cluster submitted without waiting
/// and continued by `presize settle`, is retried with the same caps. With a 64 MB static
/// default below the killed 100 MB cap the rule grows geometrically: under the default rule
/// (×2, two attempts) all give up at 200 MB; under ×3 and three attempts all reach 2700 MB
/// and fit.
fn retry_rule_is_shared(
    conf: &Path,
    config: &str,
    caps: &[i64],
    outcomes: &[&str],
    code_expected: i32,
) -> Vec<String> {
    let code = "x = b'x' * (400 << 20)";
    let mut ids = Vec::new();
    let env = Env::with_config(config);
    let mut seen: Vec<Vec<AttemptRow>> = Vec::new();
    for way in ["local", "slurm-wait", "slurm-settle"] {
        // A key of its own per way: no run is history for another.
        let key = format!("grow-{way}");
        let mut c = cmd(&env, conf);
        c.args(["run", "--memory-mb", "100", "--job-key", &key]);
        match way {
            "slurm-wait" => c.args(["--backend", "slurm", "--wait"]),
            "slurm-settle" => c.args(["--backend", "slurm"]),
            _ => &mut c,
        };
        let o = c.args(["--", "python3", "-c", code]).output().unwrap();
        let expected = if way == "slurm-settle" {
            0
        } else {
            code_expected
        };
        assert_eq!(
            o.status.code(),
            Some(expected),
            "{way} {config:?}: {}",
            stderr(&o)
        );
        if way == "slurm-settle" {
            // The settle passes submit each retry.
            let deadline = Instant::now() + Duration::from_secs(150);
            while attempts_of(&env, &key).iter().any(|r| r.2.is_none()) {
                assert!(Instant::now() < deadline, "{:?}", attempts_of(&env, &key));
                let o = env.run(&["settle", "--json"]);
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let rows = attempts_of(&env, &key);
        let caps_of: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let outcomes_of: Vec<&str> = rows.iter().map(|r| r.2.as_deref().unwrap_or("")).collect();
        assert_eq!(caps_of, caps, "{way} under {config:?}: {rows:?}");
        assert_eq!(outcomes_of, outcomes, "{way} under {config:?}: {rows:?}");
        let backend = if way == "local" { "cgroup" } else { "slurm" };
        assert!(rows.iter().all(|r| r.4.starts_with(backend)), "{rows:?}");
        if way != "local" {
            let sids: Vec<String> = q(
                &env,
                &format!("SELECT slurm_job_id FROM resource_prediction WHERE job_key = '{key}'"),
            );
            ids.extend(sids);
        }
        seen.push(rows);
    }
    // The retry rows say the same about their limits whichever way they ran.
    let sources: Vec<Vec<&str>> = seen
        .iter()
        .map(|rows| rows.iter().map(|r| r.3.as_str()).collect())
        .collect();
    assert!(sources.iter().all(|s| *s == sources[0]), "{sources:?}");
    ids
}

/// [`retry_rule_is_shared`] under the default rule.
fn retry_rule_default(conf: &Path) -> Vec<String> {
    retry_rule_is_shared(
        conf,
        "[policy]\ndefault_memory_mb = 64\n",
        &[100, 200],
        &["oom_killed", "oom_killed"],
        137,
    )
}

/// [`retry_rule_is_shared`] under the changed rule.
fn retry_rule_changed(conf: &Path) -> Vec<String> {
    retry_rule_is_shared(
        conf,
        "[policy]\ndefault_memory_mb = 64\nescalation_factor = 3.0\nmax_attempts = 3\n",
        &[100, 300, 2700],
        &["oom_killed", "oom_killed", "ok"],
        0,
    )
}

/// Past its time limit (`--timeout 1` → `--time=1`, killed 60–90 s later): timed_out.
fn times_out(conf: &Path) -> Vec<String> {
    let env = Env::new();
    let t0 = Instant::now();
    let o = cmd(&env, conf)
        .args([
            "run",
            "--backend",
            "slurm",
            "--wait",
            "--timeout",
            "1",
            "--",
        ])
        .args(["sleep", "300"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(124), "{err}");
    assert!(err.contains("--time=1"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(150),
        "{:?}",
        t0.elapsed()
    );
    let (outcome, state, wall, timeout): (String, String, f64, i64) = env
        .conn()
        .query_row(
            "SELECT outcome, slurm_state, actual_wall_s, applied_timeout_s FROM resource_prediction",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((outcome.as_str(), state.as_str()), ("timed_out", "TIMEOUT"));
    assert_eq!(timeout, 1);
    assert!((55.0..150.0).contains(&wall), "wall {wall}");
    stdout(&o).lines().map(String::from).collect()
}

/// 20 varied jobs submitted without waiting, settled by `presize settle`, then a retrain
/// trains on exactly those cluster-settled rows.
fn twenty_then_retrain(conf: &Path) -> Vec<String> {
    let env = Env::with_config("[policy]\ndefault_memory_mb = 512\n");
    let mut ids = Vec::new();
    for i in 0..20 {
        let code = format!(
            "import time\nx = bytearray({} << 20)\nfor j in range(0, len(x), 4096): x[j] = 1\ntime.sleep({})",
            5 + 10 * i,
            0.2 * (i % 4) as f64
        );
        let t0 = Instant::now();
        let o = cmd(&env, conf)
            .args([
                "run",
                "--backend",
                "slurm",
                "--job-key",
                &format!("v{}", i % 5),
                "--",
            ])
            .args(["python3", "-c", &code])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(t0.elapsed() < Duration::from_secs(20));
        let out = stdout(&o);
        let id = out.trim();
        assert!(
            id.parse::<u64>().is_ok() && out.lines().count() == 1,
            "{out:?}"
        );
        ids.push(id.to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let o = env.run(&["settle", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");
        let unsettled: Vec<i64> = q(
            &env,
            "SELECT count(*) FROM resource_prediction WHERE settled_at IS NULL",
        );
        if unsettled[0] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {v}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let outcomes: Vec<String> = q(&env, "SELECT outcome FROM resource_prediction");
    assert_eq!(outcomes.len(), 20);
    if !outcomes.iter().all(|o| o == "ok") {
        let failed: Vec<String> = q(
            &env,
            "SELECT id || ' ' || outcome || ' ' || coalesce(slurm_state, '') || ' exit '
                    || coalesce(exit_code, '') || ' ' || slurm_error
             FROM resource_prediction WHERE outcome != 'ok'",
        );
        let detail: Vec<String> = failed
            .iter()
            .map(|f| {
                let err_file = f.rsplit(' ').next().unwrap_or("");
                format!(
                    "{f}: {:?}",
                    std::fs::read_to_string(err_file).unwrap_or_default()
                )
            })
            .collect();
        panic!("not all ok: {detail:#?}");
    }
    let backends: Vec<String> = q(&env, "SELECT DISTINCT backend FROM resource_prediction");
    assert_eq!(backends, vec!["slurm".to_string()]);
    // The peaks follow the allocations (5 … 195 MiB on top of the interpreter).
    let peaks: Vec<f64> = q(
        &env,
        "SELECT actual_rss_mb FROM resource_prediction ORDER BY id",
    );
    assert!(peaks[19] - peaks[0] > 170.0, "{peaks:?}");
    let o = env.run(&["retrain", "--min-rows", "20", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "promoted", "{v}");
    assert_eq!(v["settled_rows"], 20);
    assert_eq!(
        v["train_rows"].as_u64().unwrap() + v["holdout_rows"].as_u64().unwrap(),
        20
    );
    ids
}

fn slurmstepd_pids() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "slurmstepd")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn job_cgroups(ids: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for ctrl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let Ok(tops) = std::fs::read_dir(ctrl.path()) else {
            continue;
        };
        for top in tops.flatten() {
            if !top.file_name().to_string_lossy().starts_with("slurm") {
                continue;
            }
            for id in ids {
                let p = top.path().join("uid_0").join(format!("job_{id}"));
                if p.exists() {
                    left.push(p.display().to_string());
                }
            }
        }
    }
    left
}

#[test]
fn slurm_cluster_end_to_end() {
    let conf = require_slurm!();
    let t0 = Instant::now();
    type Scenario = fn(&Path) -> Vec<String>;
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("times_out", times_out),
        ("fits", fits),
        ("oom_then_escalated", oom_then_escalated),
        ("twenty_then_retrain", twenty_then_retrain),
        ("retry_rule_default", retry_rule_default),
        ("retry_rule_changed", retry_rule_changed),
    ];
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|(name, f)| {
            let conf = conf.clone();
            (name, std::thread::spawn(move || f(&conf)))
        })
        .collect();
    let mut ids = Vec::new();
    let mut failures = Vec::new();
    for (name, h) in handles {
        match h.join() {
            Ok(v) => ids.extend(v),
            Err(e) => failures.push(format!(
                "{name}: {}",
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!("slurm scenarios took {:?}", t0.elapsed());
    // Nothing left: no job in the queue, no step daemon, no job cgroup.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queue = Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .env("SLURM_CONF", &conf)
            .output()
            .unwrap();
        let queued: Vec<String> = String::from_utf8_lossy(&queue.stdout)
            .lines()
            .filter(|l| ids.iter().any(|i| i == l.trim()))
            .map(String::from)
            .collect();
        let steps = slurmstepd_pids();
        let cgroups = job_cgroups(&ids);
        if queued.is_empty() && steps.is_empty() && cgroups.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: queued {queued:?}, slurmstepd {steps:?}, cgroups {cgroups:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The in-job wrapper on its own (no cluster needed): exit code passes through, the report
/// has the peak of the command.
#[test]
fn slurm_wrap_reports_peak_and_passes_exit_code() {
    let env = Env::new();
    let report = env.path("r.json");
    let o = env
        .cmd()
        .arg("slurm-wrap")
        .arg("--report")
        .arg(&report)
        .args([
            "--",
            "python3",
            "-c",
            "import sys; x = b'x' * (60 << 20); sys.exit(3)",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["exit_code"], 3);
    let peak = v["peak_rss_mb"].as_f64().unwrap();
    assert!(peak >= 60.0, "{v}");
    assert!(v["rusage_maxrss_mb"].as_f64().unwrap() >= 60.0, "{v}");
}

/// `stats --by backend` groups rows by where they ran (no cluster needed: the second row is
/// relabelled as a cluster row; the end-to-end test above does it with real SLURM jobs).
#[test]
fn stats_by_backend_groups_local_and_cluster_rows() {
    let env = Env::new();
    for n in [1, 2, 3] {
        let code = format!("x = bytearray({n} << 20)");
        let o = env.run(&["run", "-q", "--", "python3", "-c", &code]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let local = q::<String>(&env, "SELECT backend FROM resource_prediction")[0].clone();
    env.conn()
        .execute(
            "UPDATE resource_prediction SET backend = 'slurm' WHERE id = 3",
            [],
        )
        .unwrap();
    let o = env.run(&["stats", "--by", "backend", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["by"], "backend");
    let groups: Vec<(String, u64)> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                g["jobs"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![(local, 2), ("slurm".to_string(), 1)];
    expected.sort();
    assert_eq!(groups, expected);
}
