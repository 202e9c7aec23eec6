//! presize tells the operator the truth (issue 13): `predict` shows what `run` does, every
//! row says where each limit came from and every figure counts by that source, a caller
//! can tell presize's verdict from the job's exit status, job keys are readable, and the
//! command line's resource flags reach the prediction.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::helper::{assert_clean_error, stderr, stdout, Env};

const ALLOC_PY: &str = "import sys\nn = int(sys.argv[1])\nb = bytearray(n * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n";

fn json(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// (memory_source, timeout_source, applied_memory_mb, applied_timeout_s, memory_limit_mb,
/// timeout_s, predicted_rss_mb, job_key, enforced, outcome) of row `id`.
type Row = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    String,
    i64,
    Option<String>,
);

fn row(env: &Env, id: i64) -> Row {
    env.conn()
        .query_row(
            "SELECT memory_source, timeout_source, applied_memory_mb, applied_timeout_s,
                    memory_limit_mb, timeout_s, predicted_rss_mb, job_key, enforced, outcome
             FROM resource_prediction WHERE id = ?1",
            [id],
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
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .unwrap()
}

fn last_id(env: &Env) -> i64 {
    env.conn()
        .query_row("SELECT max(id) FROM resource_prediction", [], |r| r.get(0))
        .unwrap()
}

/// `predict --json` and the row `run` writes for the same job agree: prediction, applied
/// limits, the prediction's own limits, the sources and the key — on a fresh store and again
/// once the key has history (which changes the prediction).
#[test]
fn predict_shows_the_decision_run_makes() {
    let env = Env::new();
    let script = env.path("alloc.py");
    std::fs::write(&script, ALLOC_PY).unwrap();
    let job = ["python3", script.to_str().unwrap(), "400"];
    for round in 0..2 {
        let mut args = vec!["predict", "--json", "--"];
        args.extend(job);
        let p = json(&env.run(&args));
        assert_eq!(p["verdict"], "run");
        let mut args = vec!["run", "-q", "--"];
        args.extend(job);
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (ms, ts, am, at, pm, pt, prss, key, enforced, _) = row(&env, last_id(&env));
        let ctx = format!("round {round}: {p}");
        assert_eq!(
            Some(p["limits"]["memory_limit_mb"].as_i64().unwrap()),
            am,
            "{ctx}"
        );
        assert_eq!(
            Some(p["limits"]["timeout_s"].as_i64().unwrap()),
            at,
            "{ctx}"
        );
        assert_eq!(
            Some(p["predicted_limits"]["memory_limit_mb"].as_i64().unwrap()),
            pm,
            "{ctx}"
        );
        assert_eq!(
            Some(p["predicted_limits"]["timeout_s"].as_i64().unwrap()),
            pt,
            "{ctx}"
        );
        assert_eq!(p["peak_rss_mb"].as_f64(), prss, "{ctx}");
        assert_eq!(
            p["limit_sources"]["memory"].as_str(),
            ms.as_deref(),
            "{ctx}"
        );
        assert_eq!(
            p["limit_sources"]["timeout"].as_str(),
            ts.as_deref(),
            "{ctx}"
        );
        assert_eq!(p["job_key"].as_str(), Some(key.as_str()), "{ctx}");
        assert_eq!(
            p["limits"]["enforced"].as_bool(),
            Some(enforced == 1),
            "{ctx}"
        );
        if round == 1 {
            // The first run's measured ~400 MB peak is now the key's history.
            assert!(prss.unwrap() > 300.0, "{ctx}");
        }
    }
    // The old `predict SCRIPT` form still works; no job at all is a one-line usage error.
    let p = json(&env.run(&["predict", "--json", script.to_str().unwrap()]));
    assert_eq!(p["command"][0], script.to_str().unwrap());
    assert_clean_error(&env.run(&["predict"]), 2, "predict -- CMD");
}

struct Seen {
    row_memory: String,
    row_timeout: String,
    stderr: String,
    predict: Value,
}

/// Run one job, then predict the same job with the same flags.
fn run_and_predict(env: &Env, flags: &[&str], dry: bool, job: &[&str]) -> Seen {
    let mut c = env.cmd();
    if dry {
        c.env("PRESIZE_DRY_RUN", "1");
    }
    let o = c
        .arg("run")
        .args(flags)
        .arg("--")
        .args(job)
        .output()
        .unwrap();
    let err = stderr(&o);
    let (ms, ts, ..) = row(env, last_id(env));
    let mut c = env.cmd();
    if dry {
        c.env("PRESIZE_DRY_RUN", "1");
    }
    let p = json(
        &c.args(["predict", "--json"])
            .args(flags.iter().filter(|f| !f.starts_with("--queue")))
            .arg("--")
            .args(job)
            .output()
            .unwrap(),
    );
    Seen {
        row_memory: ms.unwrap(),
        row_timeout: ts.unwrap(),
        stderr: err,
        predict: p,
    }
}

/// Each limit source is the same in the row, on stderr, in `predict --json`, in `stats`
/// and in `forecast`: only predicted limits count as "under predicted limits".
#[test]
fn each_limit_source_agrees_everywhere() {
    // static: the prior's confidence (0.01) is below the default threshold.
    let env = Env::new();
    let s = run_and_predict(&env, &[], false, &["true"]);
    assert_eq!(
        (s.row_memory.as_str(), s.row_timeout.as_str()),
        ("static", "static")
    );
    assert!(
        s.stderr.contains("memory cap 8192 MB (static)"),
        "{}",
        s.stderr
    );
    // The sizing engine's reason: nothing is known of this job (no trained model, no runs).
    assert!(s.stderr.contains("novel"), "{}", s.stderr);
    assert_eq!(s.predict["limit_sources"]["memory"], "static");
    assert_eq!(s.predict["limits"]["enforced"], false);
    // override: both limits from the command line; the job is killed at its 1 s timeout,
    // which is not a failure under predicted limits.
    let s = run_and_predict(
        &env,
        &["--memory-mb", "300", "--timeout", "1"],
        false,
        &["sleep", "5"],
    );
    assert_eq!(
        (s.row_memory.as_str(), s.row_timeout.as_str()),
        ("override", "override")
    );
    assert!(
        s.stderr.contains("memory cap 300 MB (override)"),
        "{}",
        s.stderr
    );
    assert_eq!(s.predict["limit_sources"]["timeout"], "override");
    assert_eq!(s.predict["limits"]["timeout_s"], 1);
    // dry run, with a memory override: the override is what was enforced, and says so.
    let s = run_and_predict(&env, &["--memory-mb", "200"], true, &["true"]);
    assert_eq!(
        (s.row_memory.as_str(), s.row_timeout.as_str()),
        ("override", "dry-run")
    );
    assert!(
        s.stderr.contains("memory cap 200 MB (override)") && s.stderr.contains("(dry-run)"),
        "{}",
        s.stderr
    );
    assert_eq!(s.predict["limit_sources"]["timeout"], "dry-run");
    let s = run_and_predict(&env, &[], true, &["true"]);
    assert_eq!(s.row_memory, "dry-run");
    assert_eq!(s.predict["limit_sources"]["memory"], "dry-run");

    let st = json(&env.run(&["stats", "--json"]));
    let im = &st["impact"];
    assert_eq!(im["memory_sources"]["static"], 1, "{im}");
    assert_eq!(im["memory_sources"]["override"], 2, "{im}");
    assert_eq!(im["memory_sources"]["dry-run"], 1, "{im}");
    assert_eq!(im["timeouts"], 1);
    assert_eq!(im["timeouts_under_predicted"], 0);
    assert_eq!(im["predicted_cap_attempts"], 0);
    let f = json(&env.run(&["forecast", "--json"]));
    assert_eq!(f["failures_under_predicted_limits"], 0, "{f}");

    // predicted: the original formula (`headroom`; the default engine never trusts the
    // prior alone) with threshold 0 sets both limits; a 1 s predicted timeout (floor 1 s)
    // kills a 5 s sleep, and that one is a failure under predicted limits (one attempt: the
    // engine's rule would retry a predicted timeout at the static default).
    let env = Env::with_config("[policy]\nlimit_mode = \"headroom\"\nmax_attempts = 1\nconfidence_threshold = 0.0\ntimeout_floor_s = 1\nwall_headroom = 1.0\ngrace_period_s = 1\n");
    let s = run_and_predict(&env, &[], false, &["sleep", "5"]);
    assert_eq!(
        (s.row_memory.as_str(), s.row_timeout.as_str()),
        ("predicted", "predicted")
    );
    assert!(s.stderr.contains("(predicted)"), "{}", s.stderr);
    assert_eq!(s.predict["limit_sources"]["memory"], "predicted");
    assert_eq!(s.predict["limits"]["enforced"], true);
    let (.., enforced, outcome) = row(&env, last_id(&env));
    assert_eq!((enforced, outcome.as_deref()), (1, Some("timed_out")));
    let st = json(&env.run(&["stats", "--json"]));
    assert_eq!(st["impact"]["memory_sources"]["predicted"], 1);
    assert_eq!(st["impact"]["timeouts_under_predicted"], 1);
    let f = json(&env.run(&["forecast", "--json"]));
    assert_eq!(f["failures_under_predicted_limits"], 1, "{f}");
}

fn status(
    env: &Env,
    name: &str,
    extra_env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, Value) {
    let file = env.path(name);
    let mut c = env.cmd();
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let o = c
        .args(["run", "-q", "--status-file", file.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    (o.status.code(), serde_json::from_str(&text).unwrap())
}

/// A job that exits 3 exits like a rejection and a job that SIGKILLs itself like an OOM
/// kill; the status file tells them apart, and a queue timeout has its own verdict and row.
#[test]
fn status_file_tells_presize_verdict_from_the_job_exit() {
    let env = Env::new();
    let (code, v) = status(&env, "exit3.json", &[], &["--", "sh", "-c", "exit 3"]);
    assert_eq!(code, Some(3));
    assert_eq!(v["verdict"], "job_failed");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["presize_exit"], 3);

    let (code, v) = status(&env, "kill.json", &[], &["--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(code, Some(137));
    assert_eq!(v["verdict"], "job_failed", "{v}");
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["signal"], 9);

    let (code, v) = status(&env, "ok.json", &[], &["--", "true"]);
    assert_eq!((code, v["verdict"].as_str()), (Some(0), Some("ok")));

    // Rejected: even the program's smallest footprint is above a 1 MB budget (a key that
    // never ran: one whose own runs fit the budget is not rejected for the prior's bound).
    let (code, v) = status(
        &env,
        "rej.json",
        &[("PRESIZE_HOST_BUDGET_MB", "1")],
        &["--job-key", "never-ran", "--", "true"],
    );
    assert_eq!(
        (code, v["verdict"].as_str()),
        (Some(3), Some("rejected")),
        "{v}"
    );

    // Queue timeout: a running job holds 200 of 300 MB, the next one asks for 200 MB.
    let hold = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "300")
        .args(["run", "-q", "--memory-mb", "200", "--", "sleep", "4"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.count() == 0
        || env
            .conn()
            .query_row(
                "SELECT count(*) FROM reservation WHERE state = 'running'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 0
    {
        assert!(std::time::Instant::now() < deadline, "holder did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, v) = status(
        &env,
        "queue.json",
        &[("PRESIZE_HOST_BUDGET_MB", "300")],
        &["--memory-mb", "200", "--queue-timeout", "1", "--", "true"],
    );
    assert_eq!(code, Some(3));
    assert_eq!(v["verdict"], "queue_timeout", "{v}");
    assert_eq!(v["outcome"], "queue_timeout");
    hold.wait_with_output().unwrap();
    let n: i64 = env
        .conn()
        .query_row(
            "SELECT count(*) FROM resource_prediction WHERE outcome = 'queue_timeout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let st = json(&env.run(&["stats", "--json"]));
    assert_eq!(st["outcomes"]["queue_timeout"], 1);
    assert_eq!(st["impact"]["queue_timeouts"], 1);
    // A status file that cannot be written stops presize before the job runs.
    let before = env.count();
    let o = env.run(&[
        "run",
        "--status-file",
        "/nonexistent/dir/s.json",
        "--",
        "true",
    ]);
    assert_clean_error(&o, 2, "status file");
    assert_eq!(env.count(), before);
}

/// An OOM kill on the last attempt is presize's verdict, not the job's.
#[test]
fn status_file_says_oom_killed() {
    if std::env::var_os("PRESIZE_REQUIRE_CGROUP_TESTS").is_none()
        && !Path::new("/sys/fs/cgroup/memory").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        eprintln!("skipped: no cgroup memory controller");
        return;
    }
    let env = Env::with_config("[policy]\nmax_attempts = 1\n");
    let script = env.path("alloc.py");
    std::fs::write(&script, ALLOC_PY).unwrap();
    let (code, v) = status(
        &env,
        "oom.json",
        &[],
        &[
            "--memory-mb",
            "64",
            "--",
            "python3",
            script.to_str().unwrap(),
            "200",
        ],
    );
    assert_eq!(code, Some(137));
    assert_eq!(v["verdict"], "oom_killed", "{v}");
}

/// Keys are the script's name plus a short hash; `-c` programs get a key per program;
/// history recorded under the old opaque key is still found.
#[test]
fn job_keys_are_readable_and_old_keys_still_match() {
    let env = Env::new();
    let script = env.path("alloc.py");
    std::fs::write(&script, ALLOC_PY).unwrap();
    let o = env.run(&["run", "-q", "--", "python3", "-c", "print(1)"]);
    assert_eq!(o.status.code(), Some(0));
    let o = env.run(&["run", "-q", "--", "python3", "-c", "print(2)"]);
    assert_eq!(o.status.code(), Some(0));
    let o = env.run(&["run", "-q", "--", "python3", script.to_str().unwrap(), "50"]);
    assert_eq!(o.status.code(), Some(0));
    let keys: Vec<String> = {
        let conn = env.conn();
        let mut st = conn
            .prepare("SELECT job_key FROM resource_prediction ORDER BY id")
            .unwrap();
        let k = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        k
    };
    assert!(
        keys[0].starts_with("python3-c-") && keys[1].starts_with("python3-c-"),
        "{keys:?}"
    );
    assert_ne!(keys[0], keys[1]);
    assert!(
        keys[2].starts_with("alloc.py-") && keys[2].len() == "alloc.py-".len() + 8,
        "{keys:?}"
    );
    let st = json(&env.run(&["stats", "--json", "--by", "job-key"]));
    let groups: Vec<&str> = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert!(groups.contains(&keys[2].as_str()), "{groups:?}");
    let f = json(&env.run(&["forecast", "--json"]));
    assert!(
        f["top_callers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["job_key"] == keys[2].as_str()),
        "{f}"
    );

    // Rename the row's key to the one presize used to compute (k- + 16 hex of the
    // canonical script path): the next prediction still sees that run as history.
    let legacy = presize::runner::legacy_job_key(Some(&script), &[]);
    assert!(legacy.starts_with("k-") && legacy.len() == 18);
    env.conn()
        .execute(
            "UPDATE resource_prediction SET job_key = ?1 WHERE job_key = ?2",
            [&legacy, &keys[2]],
        )
        .unwrap();
    let p = json(&env.run(&[
        "predict",
        "--json",
        "--",
        "python3",
        script.to_str().unwrap(),
        "50",
    ]));
    assert_eq!(p["features"]["prior_count"], 1.0, "{p}");
    assert_eq!(p["job_key"], keys[2].as_str());
}

/// The command line's memory and thread flags reach the prediction and the first cap.
#[test]
fn pipeline_flags_reach_prediction_and_first_cap() {
    let env = Env::with_config("[policy]\nhost_budget_mb = 200000\n");
    let sort = env.path("sort.sh");
    std::fs::write(
        &sort,
        "#!/bin/bash\nset -euo pipefail\nbwa mem -t 4 ref.fa r1.fq r2.fq \\\n  | samtools sort -m 4G -@ 4 -o out.bam -\nsamtools index out.bam\n",
    )
    .unwrap();
    let gatk = env.path("gatk.sh");
    std::fs::write(
        &gatk,
        "#!/bin/sh\njava -Xmx12g -jar gatk.jar HaplotypeCaller -R ref.fa -I in.bam -O out.vcf\n",
    )
    .unwrap();
    let plain = env.path("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\nsort in.txt | uniq -c > out.txt\n").unwrap();
    let predict =
        |p: &Path| json(&env.run(&["predict", "--json", "--", "bash", p.to_str().unwrap()]));
    let (s, g, n) = (predict(&sort), predict(&gatk), predict(&plain));
    // samtools sort: 4 threads × 4 GiB; bwa's 4 threads run beside it.
    assert_eq!(s["features"]["hint_memory_mb"], 16384.0, "{s}");
    assert_eq!(s["features"]["hint_threads"], 8.0);
    // java -Xmx12g: the 12 GiB heap plus JVM overhead.
    let heap = g["features"]["hint_memory_mb"].as_f64().unwrap();
    assert!(heap > 12288.0 && heap < 14000.0, "{g}");
    assert_eq!(n["features"]["hint_memory_mb"], 0.0);
    for (v, stated) in [(&s, 16384.0), (&g, 12288.0)] {
        let point = v["peak_rss_mb"].as_f64().unwrap();
        let upper = v["upper"]["peak_rss_mb"].as_f64().unwrap();
        let cap = v["limits"]["memory_limit_mb"].as_f64().unwrap();
        assert!(
            point >= stated,
            "point {point} below the stated {stated}: {v}"
        );
        assert!(upper >= 1.2 * stated, "upper {upper}: {v}");
        assert!(
            cap >= point && cap > 8192.0,
            "first cap {cap} ignores the flags: {v}"
        );
        assert_eq!(v["limit_sources"]["memory"], "predicted", "{v}");
    }
    assert!(n["peak_rss_mb"].as_f64().unwrap() < 100.0);
    // The same flags straight on the job's argv.
    let v = json(&env.run(&[
        "predict", "--json", "--", "samtools", "sort", "-m", "2G", "-@", "2", "in.bam",
    ]));
    assert_eq!(v["features"]["hint_memory_mb"], 4096.0, "{v}");
    // Shell functions the script defines are not programs it imports.
    let f = env.path("fn.sh");
    std::fs::write(
        &f,
        "#!/bin/sh\nalign() { bwa mem -t 2 ref.fa \"$1\"; }\nalign a.fq\n",
    )
    .unwrap();
    let v = predict(&f);
    let imports: Vec<&str> = v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"bwa") && !imports.contains(&"align"),
        "{imports:?}"
    );
}

/// Usage errors are one line; `run` without `--` says where the job goes.
#[test]
fn usage_errors_are_one_line() {
    let env = Env::new();
    assert_clean_error(
        &env.run(&["run", "python3", "x.py"]),
        2,
        "put the job after `--`",
    );
    assert_clean_error(&env.run(&["stats", "--by", "nope"]), 2, "possible values");
    assert_clean_error(
        &env.run(&["run", "--memory-mb", "x", "--", "true"]),
        2,
        "--memory-mb",
    );
}
