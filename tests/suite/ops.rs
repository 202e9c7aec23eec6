//! Operator tools with real jobs: `presize status`, forced and automatic burst mode.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::helper::{assert_clean_error, stderr, stdout, Env};

fn spawn(env: &Env, budget: &str, key: &str, cap: &str, secs: &str) -> Child {
    env.cmd()
        .env("PRESIZE_HOST_BUDGET_MB", budget)
        .args(["run", "-q", "--memory-mb", cap, "--job-key", key])
        .args(["--", "sleep", secs])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn count(env: &Env, sql: &str) -> i64 {
    if !env.db.exists() {
        return 0;
    }
    env.conn().query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn running(env: &Env) -> i64 {
    count(
        env,
        "SELECT count(*) FROM reservation WHERE state = 'running'",
    )
}

fn waiting(env: &Env) -> i64 {
    count(
        env,
        "SELECT count(*) FROM reservation WHERE state = 'waiting'",
    )
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn status(env: &Env, budget: &str) -> Value {
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", budget)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn finish(kids: Vec<Child>) -> Vec<Output> {
    kids.into_iter()
        .map(|k| {
            let o = k.wait_with_output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            o
        })
        .collect()
}

fn ts(v: &Value) -> SystemTime {
    humantime::parse_rfc3339_weak(v.as_str().unwrap()).unwrap()
}

#[test]
fn forced_burst_admits_a_waiting_job_then_expires() {
    // Budget 300 MB, caps 200 MB: a second job waits. The prior predicts a `sleep` peak far
    // below 150 MB, so under a ×1.5 burst (caps up to 450 MB) the second job may start.
    let env = Env::new();
    let a = spawn(&env, "300", "a", "200", "9");
    wait_until("a to run", 20, || running(&env) == 1);
    let b = spawn(&env, "300", "b", "200", "7");
    wait_until("b to queue", 20, || waiting(&env) == 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(running(&env), 1, "b started without a burst");

    let o = env.run(&[
        "burst", "--factor", "1.5", "--for", "2s", "--reason", "test",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t_burst = Instant::now();
    wait_until("b to start under the burst", 5, || running(&env) == 2);
    assert!(t_burst.elapsed() < Duration::from_secs(2));

    let s = status(&env, "300");
    assert_eq!(s["burst"]["factor"], 1.5);
    assert_eq!(s["burst"]["source"], "manual");
    assert_eq!(s["burst"]["why"], "test");
    let until = ts(&s["burst"]["until"]);
    let started = ts(&s["burst"]["started_at"]);
    let len = until.duration_since(started).unwrap();
    assert_eq!(len, Duration::from_secs(2));
    assert_eq!(s["burst_factor"], 1.5);
    assert_eq!(s["cap_limit_mb"], 450);
    assert_eq!(s["reserved_mb"], 400);
    let run = s["running"].as_array().unwrap();
    assert_eq!(run.len(), 2);
    assert!(
        run[0]["admitted_during_burst"].is_null(),
        "a ran before the burst"
    );
    assert_eq!(run[1]["admitted_during_burst"], s["burst"]["id"]);
    assert!(s["running_predicted_mb"].as_f64().unwrap() <= 300.0);
    let text = stdout(
        &env.cmd()
            .env("PRESIZE_HOST_BUDGET_MB", "300")
            .arg("status")
            .output()
            .unwrap(),
    );
    assert!(text.contains("burst: ×1.50 until "), "{text}");

    // After the burst has ended by itself, a new job waits again.
    while SystemTime::now() <= until + Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = spawn(&env, "300", "c", "200", "0.2");
    wait_until("c to queue", 20, || waiting(&env) == 1);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(waiting(&env), 1, "c started after the burst ended");
    assert_eq!(running(&env), 2);

    // status --json with running and waiting jobs: every field the operator needs. The
    // evidence and limit source columns (V5) are written by the sizing engine; set them for
    // `a` here so the test sees status read them from the row.
    env.conn()
        .execute(
            "UPDATE resource_prediction SET evidence = 'history', memory_source = 'predicted'
             WHERE job_key = 'a'",
            [],
        )
        .unwrap();
    let s = status(&env, "300");
    assert!(s["burst"].is_null(), "{}", s["burst"]);
    assert_eq!(s["burst_factor"], 1.0);
    assert_eq!(s["budget_mb"], 300);
    let run = s["running"].as_array().unwrap();
    let keys: Vec<&str> = run.iter().map(|j| j["job_key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a", "b"]);
    for j in run {
        assert_eq!(j["cap_mb"], 200);
        assert_eq!(j["priority"], "normal");
        assert!(j["elapsed_s"].as_f64().unwrap() > 0.5, "{j}");
        assert!(j["timeout_s"].as_i64().unwrap() > 0, "{j}");
        assert!(
            j.get("evidence").is_some() && j.get("memory_source").is_some(),
            "{j}"
        );
        assert!(j["queue_position"].is_null());
        assert_eq!(j["holder_alive"], true);
        assert!(j["predicted_mb"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(run[0]["evidence"], "history");
    assert_eq!(run[0]["memory_source"], "predicted");
    let w = s["waiting"].as_array().unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0]["job_key"], "c");
    assert_eq!(w[0]["queue_position"], 1);
    assert_eq!(s["waiting_mb"], 200);
    assert_eq!(s["model"]["predictions_from"], "prior");
    assert!(!s["fallbacks"].as_array().unwrap().is_empty());
    assert!(
        s["next_retrain"].as_str().unwrap().starts_with("unknown")
            || s["next_retrain"].as_str().unwrap().len() > 5
    );

    finish(vec![a, b, c]);
    assert_eq!(env.reservations(), 0);
    // The burst is on record with who, why and its end.
    let o = env.run(&["burst", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["active"].is_null());
    assert_eq!(
        v["recent"][0]["who"].as_str().map(|s| !s.is_empty()),
        Some(true)
    );
    assert_eq!(v["recent"][0]["why"], "test");
}

#[test]
fn burst_never_admits_when_predicted_peaks_exceed_the_budget() {
    // Budget 20 MB, caps 15 MB: a ×1.5 burst would allow 30 MB of caps, but two predicted
    // `sleep` peaks (the prior predicts over 10 MB each) do not fit 20 MB: the second waits.
    let env = Env::new();
    let a = spawn(&env, "20", "a", "15", "3");
    wait_until("a to run", 20, || running(&env) == 1);
    let pred: f64 = env
        .conn()
        .query_row(
            "SELECT predicted_mb FROM reservation WHERE state = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(pred > 10.0, "the prior's prediction changed: {pred}");
    let o = env.run(&["burst", "--factor", "1.5", "--for", "30s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let b = spawn(&env, "20", "b", "15", "0.1");
    wait_until("b to queue", 20, || waiting(&env) == 1);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(running(&env), 1, "burst admitted past the predicted peaks");
    let s = status(&env, "20");
    assert_eq!(s["burst_factor"], 1.5);
    finish(vec![a, b]);
    // `burst --off` ends it on record.
    let o = env.run(&["burst", "--off", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["change"], "ended");
    assert!(v["active"].is_null());
    assert!(v["recent"][0]["ended_at"].is_string());
}

#[test]
fn automatic_burst_enters_on_queue_pressure_expires_and_cools_down() {
    let env = Env::with_config(
        "[admission]\nauto_burst = true\nauto_burst_factor = 1.5\nauto_burst_after_s = 1\n\
         auto_burst_max_s = 2\nauto_burst_cool_down_s = 60\n",
    );
    let bursts = |env: &Env| count(env, "SELECT count(*) FROM burst");
    let a = spawn(&env, "300", "a", "200", "8");
    wait_until("a to run", 20, || running(&env) == 1);
    let t0 = Instant::now();
    let b = spawn(&env, "300", "b", "200", "6");
    wait_until("b to start under an automatic burst", 10, || {
        running(&env) == 2
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "b started before the queue had waited auto_burst_after_s"
    );
    assert_eq!(bursts(&env), 1);
    let (source, who, why, factor): (String, String, String, f64) = env
        .conn()
        .query_row("SELECT source, who, why, factor FROM burst", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(
        (source.as_str(), who.as_str(), factor),
        ("auto", "auto", 1.5)
    );
    assert!(why.starts_with("queue: the head waited"), "{why}");
    let s = status(&env, "300");
    assert_eq!(s["burst"]["source"], "auto");
    assert_eq!(s["auto_burst"], true);
    let until = ts(&s["burst"]["until"]);

    // It ends by itself after auto_burst_max_s; within the cool-down no new one starts and a
    // third job waits although the queue presses.
    while SystemTime::now() <= until + Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status(&env, "300")["burst"].is_null());
    let c = spawn(&env, "300", "c", "200", "0.1");
    wait_until("c to queue", 20, || waiting(&env) == 1);
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(waiting(&env), 1, "c started during the cool-down");
    assert_eq!(bursts(&env), 1, "a burst started during the cool-down");
    finish(vec![a, b, c]);
}

#[test]
fn automatic_burst_enters_on_a_forecast_over_budget_and_ends_when_demand_fits() {
    let env = Env::with_config(
        "[admission]\nauto_burst = true\nauto_burst_factor = 1.5\nauto_burst_after_s = 600\n\
         auto_burst_max_s = 600\nauto_burst_cool_down_s = 0\n",
    );
    let a = spawn(&env, "300", "a", "200", "3");
    wait_until("a to run", 20, || running(&env) == 1);
    // A recorded forecast in force predicts a peak over the budget.
    let now = SystemTime::now();
    let iso = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    env.conn()
        .execute(
            "INSERT INTO forecast_record (made_at, recorded_at, trigger, horizon_hours,
                target_end, method, trend_jobs, predicted_jobs, jobs_lo, jobs_hi,
                interval_nominal, interval_source, predicted_gbh, gbh_lo, gbh_hi,
                peak_concurrent_mb, budget_mb)
             VALUES (?1, ?1, 'cli', 1, ?2, 'damped-trend', 10, 10, 8, 12, 0.8, 'model', 1, 1,
                1, 450, 300)",
            [iso(now), iso(now + Duration::from_secs(3600))],
        )
        .unwrap();
    let t0 = Instant::now();
    let b = spawn(&env, "300", "b", "200", "0.2");
    wait_until("b to start under the forecast burst", 10, || {
        count(&env, "SELECT count(*) FROM resource_prediction WHERE job_key = 'b' AND started_at IS NOT NULL") == 1
    });
    assert!(t0.elapsed() < Duration::from_secs(5));
    let why: String = env
        .conn()
        .query_row("SELECT why FROM burst WHERE source = 'auto'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(why.starts_with("forecast of "), "{why}");
    finish(vec![a, b]);
    // The next job to ask finds the demand within the budget and ends the burst early.
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "300")
        .args(["run", "-q", "--memory-mb", "200", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (ended, reason): (Option<String>, Option<String>) = env
        .conn()
        .query_row("SELECT ended_at, end_reason FROM burst", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(ended.is_some());
    assert_eq!(reason.as_deref(), Some("demand back within the budget"));
}

#[test]
fn bad_burst_and_status_arguments_are_usage_errors() {
    let env = Env::new();
    for (args, mention) in [
        (vec!["burst", "--factor", "0.9", "--for", "1m"], "factor"),
        (vec!["burst", "--factor", "nan", "--for", "1m"], "factor"),
        (vec!["burst", "--factor", "9", "--for", "1m"], "factor"),
        (vec!["burst", "--factor", "1.5", "--for", "soon"], "--for"),
        (vec!["burst", "--factor", "1.5", "--for", "0s"], "duration"),
        (vec!["burst", "--factor", "1.5", "--for", "30d"], "duration"),
    ] {
        let o = env.run(&args);
        assert_clean_error(&o, 2, mention);
    }
    let o = env.run(&["burst", "--factor", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    let o = env.run(&["burst", "--off", "--factor", "1.5", "--for", "1m"]);
    assert_eq!(o.status.code(), Some(2));
    // Nothing was recorded by the refused calls.
    let o = env.run(&["burst", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["recent"].as_array().unwrap().len(), 0);
    // A bad auto-burst config is refused in one line.
    let bad = Env::with_config("[admission]\nauto_burst = true\nauto_burst_factor = 0.5\n");
    assert_clean_error(&bad.run(&["status"]), 2, "auto_burst_factor");
}

#[test]
fn status_watch_repeats_and_stops_on_sigint() {
    let env = Env::new();
    let w = env
        .cmd()
        .args(["status", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signal to our own child.
    unsafe {
        libc::kill(w.id() as i32, libc::SIGINT);
    }
    let t0 = Instant::now();
    let o = w.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "did not stop promptly"
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!((2..=4).contains(&lines.len()), "{} frames", lines.len());
    assert!(lines.iter().all(|v| v["budget_mb"].is_u64()));
}

#[test]
fn bursts_and_scored_forecasts_show_in_stats_and_report() {
    let env = Env::new();
    let o = env.run(&[
        "burst",
        "--factor",
        "1.3",
        "--for",
        "1h",
        "--reason",
        "campaign week",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A forecast made in the past has had its horizon pass: stats scores it.
    let o = env.run(&[
        "forecast",
        "--horizon",
        "1h",
        "--now",
        "2026-01-05T12:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = env.run(&["stats", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["burst"]["factor"], 1.3);
    assert_eq!(v["bursts"][0]["why"], "campaign week");
    assert_eq!(v["forecast_accuracy"][0]["horizon_hours"], 1.0);
    assert_eq!(v["forecast_accuracy"][0]["scored"], 1);
    let text = stdout(&env.run(&["stats"]));
    assert!(text.contains("burst in force on "), "{text}");
    assert!(text.contains("recorded forecasts, scored"), "{text}");

    let page = env.path("r.html");
    let o = env.run(&["report", "--out", page.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h2>Burst periods</h2>"));
    assert!(
        html.contains("<td class=\"k\">campaign week</td>"),
        "{html}"
    );

    let o = env.run(&["burst", "--off"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&env.run(&["stats", "--json"]))).unwrap();
    assert!(v["burst"].is_null());
    assert!(v["bursts"][0]["ended_at"].is_string());
}
