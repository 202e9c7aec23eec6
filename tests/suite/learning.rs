//! The learning loop a new lab admin runs, on real processes under real cgroups: four
//! parameterised stdlib scripts run 120 times, `retrain`, then 30 new jobs with sizes inside
//! and up to 1.3× beyond what each script ran with, then jobs nothing has seen. The sizing
//! engine must not kill what it should not (≤ 1 first-attempt OOM kill in 30, no timeout
//! kill, never-seen jobs finish on their first attempt) and must not waste (Σ first cap /
//! Σ peak ≤ 1.5 over the 30).

use std::path::PathBuf;
use std::process::{Output, Stdio};

use crate::helper::{repo, stderr, Env};

fn trial(name: &str) -> String {
    repo(&format!("tests/fixtures/trial/{name}"))
        .display()
        .to_string()
}

/// A job of the trial: the command after `--`.
#[derive(Debug, Clone)]
enum Job {
    Alloc(u64),
    Table(PathBuf),
    Spin(u64),
    Grid(u64),
}

impl Job {
    fn argv(&self) -> Vec<String> {
        match self {
            Job::Alloc(n) => vec!["python3".into(), trial("alloc.py"), n.to_string()],
            Job::Table(p) => vec!["python3".into(), trial("table.py"), p.display().to_string()],
            Job::Spin(n) => vec!["python3".into(), trial("spin.py"), n.to_string()],
            Job::Grid(r) => vec![
                "python3".into(),
                trial("grid.py"),
                "--rows".into(),
                r.to_string(),
            ],
        }
    }
}

fn run(env: &Env, argv: &[String], extra_env: &[(&str, String)]) -> Output {
    let mut c = env.cmd();
    c.args(["run", "-q", "--"]).args(argv);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().expect("spawn presize")
}

/// (attempts, first cap, first outcome, final peak) of the newest job.
fn last_job(env: &Env) -> (i64, i64, String, f64) {
    let c = env.conn();
    let job_id: String = c
        .query_row(
            "SELECT job_id FROM resource_prediction ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("last job");
    let (n, cap, outcome): (i64, i64, String) = c
        .query_row(
            "SELECT (SELECT count(*) FROM resource_prediction WHERE job_id = ?1),
                    applied_memory_mb, outcome
             FROM resource_prediction WHERE job_id = ?1 ORDER BY attempt LIMIT 1",
            [&job_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("first attempt");
    let peak: f64 = c
        .query_row(
            "SELECT actual_rss_mb FROM resource_prediction WHERE job_id = ?1
             ORDER BY attempt DESC LIMIT 1",
            [&job_id],
            |r| r.get(0),
        )
        .expect("last attempt");
    (n, cap, outcome, peak)
}

/// Deterministic sizes spread over [lo, hi].
fn spread(i: u64, lo: u64, hi: u64) -> u64 {
    lo + (i * 7919 + 13) % (hi - lo + 1)
}

fn write_table(env: &Env, mb: u64) -> PathBuf {
    let p = env.path(&format!("table-{mb}.bin"));
    if !p.exists() {
        let line: Vec<u8> = (0..1023u32)
            .map(|i| b'a' + (i % 26) as u8)
            .chain([b'\n'])
            .collect();
        let data = line.repeat((mb as usize) << 10);
        std::fs::write(&p, data).expect("write table");
    }
    p
}

#[test]
fn learning_loop_trial_on_real_processes() {
    if !crate::helper::cgroup_tests_can_run() {
        return;
    }
    // A timeout floor of 5 s (60 s by default) so that a wrong timeout shows in a short
    // test: a never-seen job that runs 7 s would be killed at the floor.
    let env = Env::with_config("[policy]\ntimeout_floor_s = 5\n");
    // Training: 30 runs of each script.
    let mut train = Vec::new();
    for i in 0..30u64 {
        train.push(Job::Alloc(spread(i, 20, 300)));
        train.push(Job::Table(write_table(&env, spread(i, 2, 24))));
        train.push(Job::Spin(spread(i, 5, 60)));
        train.push(Job::Grid(spread(i, 100_000, 2_000_000)));
    }
    // Four at a time: one job of each script (four job keys), so each key's runs still
    // settle one after the other, in the same order as one by one.
    for batch in train.chunks(4) {
        let children: Vec<_> = batch
            .iter()
            .map(|j| {
                let mut c = env.cmd();
                c.args(["run", "-q", "--"]).args(j.argv());
                (j, c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn())
            })
            .collect();
        for (j, child) in children {
            let o = child
                .and_then(|c| c.wait_with_output())
                .expect("spawn presize");
            assert_eq!(o.status.code(), Some(0), "{j:?}: {}", stderr(&o));
        }
    }
    let o = env.run(&["retrain", "--min-rows", "100", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let retrain: serde_json::Value = serde_json::from_slice(&o.stdout).expect("retrain json");
    assert_eq!(retrain["promoted"], true, "{retrain}");

    // 30 new jobs: inside the range and up to 1.3× beyond it.
    let new: Vec<Job> = (0..30u64)
        .map(|i| match i % 4 {
            0 => Job::Alloc(spread(i * 3 + 1, 25, 390)),
            1 => Job::Table(write_table(&env, spread(i * 3 + 1, 3, 31))),
            2 => Job::Spin(spread(i * 3 + 1, 6, 78)),
            _ => Job::Grid(spread(i * 3 + 1, 150_000, 2_600_000)),
        })
        .collect();
    let (mut first_ooms, mut timeouts, mut sum_cap, mut sum_peak) = (0, 0, 0.0, 0.0);
    let mut lines = Vec::new();
    for j in &new {
        let o = run(&env, &j.argv(), &[]);
        assert_eq!(o.status.code(), Some(0), "{j:?}: {}", stderr(&o));
        let (n, cap, first, peak) = last_job(&env);
        first_ooms += (first == "oom_killed") as u32;
        timeouts += (first == "timed_out") as u32;
        sum_cap += cap as f64;
        sum_peak += peak;
        lines.push(format!(
            "{j:?}: attempts {n}, first cap {cap} MB, peak {peak:.1} MB, first {first}"
        ));
    }
    let ratio = sum_cap / sum_peak;
    let evidence: Vec<(String, i64)> = {
        let c = env.conn();
        let mut st = c
            .prepare(
                "SELECT evidence, count(*) FROM (SELECT evidence FROM resource_prediction
                 WHERE attempt = 1 ORDER BY id DESC LIMIT 30) GROUP BY evidence",
            )
            .expect("prepare");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    eprintln!(
        "trial: {first_ooms} first-attempt OOM kills, {timeouts} timeout kills, Σcap/Σpeak {ratio:.2}, evidence {evidence:?}\n{}",
        lines.join("\n")
    );
    assert!(
        first_ooms <= 1,
        "{first_ooms} first-attempt OOM kills\n{}",
        lines.join("\n")
    );
    assert_eq!(timeouts, 0, "{}", lines.join("\n"));
    assert!(
        ratio <= 1.5,
        "Σ first cap / Σ peak = {ratio:.2}\n{}",
        lines.join("\n")
    );

    // Never seen: a new script whose heavy import allocates 350 MB, and a new job that runs
    // longer than the timeout floor. Both finish on their first attempt.
    let lib = trial("lib");
    let o = run(
        &env,
        &["python3".into(), trial("novel_import.py")],
        &[("PYTHONPATH", lib)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (n, cap, first, peak) = last_job(&env);
    assert_eq!((n, first.as_str()), (1, "ok"), "cap {cap} peak {peak}");
    assert!(peak >= 350.0, "{peak}");
    let o = run(&env, &["python3".into(), trial("slow.py"), "7".into()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (n, _, first, _) = last_job(&env);
    assert_eq!((n, first.as_str()), (1, "ok"));
    let c = env.conn();
    let (evidence, timeout): (String, i64) = c
        .query_row(
            "SELECT evidence, applied_timeout_s FROM resource_prediction ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(evidence, "novel");
    assert!(timeout >= 3600, "{timeout}");

    // The A/B replay of this history: the configured policy's first caps are the ones the
    // rows recorded (same engine, same windows), and the alternatives are reported beside it.
    let o = env.run(&["replay", "--store", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("replay json");
    let policies = r["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 3, "{r}");
    let configured = &policies[0];
    assert!(
        configured["policy"]
            .as_str()
            .is_some_and(|p| p.starts_with("cost-aware")),
        "{r}"
    );
    let m = &configured["first_caps_matching_rows"];
    assert_eq!(m[0], m[1], "{r}");
    assert!(m[1].as_u64().unwrap_or(0) >= 150, "{r}");
    eprintln!("replay --store: {r}");
}

#[test]
fn steady_key_is_tightened_without_a_retrain() {
    if !crate::helper::cgroup_tests_can_run() {
        return;
    }
    let env = Env::new();
    let argv = vec!["python3".to_string(), trial("alloc.py"), "40".into()];
    let mut caps = Vec::new();
    for _ in 0..5 {
        let o = run(&env, &argv, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (_, cap, first, peak) = last_job(&env);
        assert_eq!(first, "ok");
        caps.push((cap, peak));
    }
    let c = env.conn();
    let (evidence, source): (String, String) = c
        .query_row(
            "SELECT evidence, memory_source FROM resource_prediction ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    // The first runs get the static default; from the fourth on, the key's own history.
    assert_eq!(caps[0].0, 8192, "{caps:?}");
    let (cap, peak) = caps[4];
    assert!(cap < 8192 && cap as f64 >= peak, "{caps:?}");
    assert_eq!(
        (evidence.as_str(), source.as_str()),
        ("history", "predicted")
    );
}
