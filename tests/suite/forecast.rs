//! `presize forecast`: fixture histories (steady, surge ×4, sparse with a gap of days, a
//! failure burst) give the expected levels, postures and actions at a fixed `--now`.

use std::time::SystemTime;

use presize::job::Outcome;
use presize::store::Store;
use serde_json::Value;

use crate::helper::history::{at, minus_h, Attempt};
use crate::helper::{assert_clean_error, stdout, Env};

const NOW: &str = "2026-01-10T12:00:00Z";

/// A job of `key` settled `h_ago` hours before NOW, running `wall_h` hours under `cap_mb`.
fn job(id: &str, key: &str, h_ago: f64, wall_h: f64, cap_mb: u64) -> Attempt {
    let mut a = Attempt::new(id, key, minus_h(at(NOW), h_ago));
    a.limit_mb = cap_mb;
    a.applied_mb = cap_mb;
    a.timeout_s = (wall_h * 3600.0 * 2.0) as u64 + 60;
    a.predicted = (wall_h * 3000.0, cap_mb as f64 * 0.6, wall_h * 3600.0);
    a.upper = (wall_h * 6000.0, cap_mb as f64, wall_h * 5400.0);
    a.actual = Some(a.predicted);
    a
}

fn store_with(env: &Env, attempts: &[Attempt]) {
    let mut store = Store::open(&env.db).unwrap();
    for a in attempts {
        a.import(&mut store);
    }
}

fn forecast(env: &Env, budget_mb: u64) -> Value {
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", budget_mb.to_string())
        .args(["forecast", "--json", "--horizon", "24", "--now", NOW])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn close(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
}

fn actions(v: &Value) -> Vec<String> {
    v["recommended_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn has_action(v: &Value, prefix: &str) -> bool {
    actions(v).iter().any(|a| a.starts_with(prefix))
}

#[test]
fn steady_history_maintains() {
    // A job every 2 h for three days, 3 h each under a 1500 MB cap: two overlap at a time.
    let env = Env::new();
    let jobs: Vec<Attempt> = (0..36)
        .map(|k| {
            let key = ["etl", "qc", "plots"][k % 3];
            job(&format!("s{k}"), key, 1.0 + 2.0 * k as f64, 3.0, 1500)
        })
        .collect();
    store_with(&env, &jobs);
    let v = forecast(&env, 4000);
    assert_eq!(v["recent_window"]["jobs"], 12);
    assert_eq!(v["baseline_window"]["jobs"], 12);
    // The previous window ends at the newest job before the recent one (25 h ago).
    assert_eq!(v["baseline_window"]["to"], "2026-01-09T11:00:00.000Z");
    close(&v["recent_request_rate"], 0.5);
    close(&v["baseline_request_rate"], 0.5);
    close(&v["predicted_request_rate"], 0.5);
    close(&v["surge_factor"], 1.0);
    assert_eq!(v["demand_level"], "low");
    assert_eq!(v["resource_mode"], "steady");
    assert_eq!(v["dispatch_posture"], "normal");
    close(&v["observed_peak_concurrent_mb"], 3000.0);
    close(&v["peak_concurrent_mb"], 3000.0);
    assert_eq!(v["capacity_advice"], "maintain");
    close(&v["advice_confidence"], 0.6);
    // 12 jobs/day × 1500/1024 GiB × 3 h.
    close(&v["memory_demand_gbh"], 12.0 * 1500.0 / 1024.0 * 3.0);
    assert_eq!(actions(&v), ["maintain current allocation"]);
    assert_eq!(v["top_callers"].as_array().unwrap().len(), 3);
    close(&v["top_callers"][0]["failure_rate"], 0.0);
}

#[test]
fn surge_of_four_times_is_critical_and_pre_warms() {
    let env = Env::new();
    let mut jobs = Vec::new();
    // Recent: a job every hour, 2.5 h each; every other one a heavy alignment (3000 MB).
    for k in 0..24 {
        let (key, cap) = if k % 2 == 0 {
            ("bulk-align", 3000)
        } else {
            ("qc", 500)
        };
        jobs.push(job(&format!("r{k}"), key, 0.5 + k as f64, 2.5, cap));
    }
    // Before: one small job every 4 h.
    for k in 0..6 {
        jobs.push(job(&format!("b{k}"), "qc", 25.0 + 4.0 * k as f64, 1.0, 500));
    }
    store_with(&env, &jobs);
    let v = forecast(&env, 10000);
    assert_eq!(v["recent_window"]["jobs"], 24);
    assert_eq!(v["baseline_window"]["jobs"], 6);
    close(&v["surge_factor"], 4.0);
    assert_eq!(v["demand_level"], "critical");
    assert_eq!(v["resource_mode"], "surge");
    assert_eq!(v["dispatch_posture"], "normal");
    // recent 1/h, baseline 0.25/h → 1 + 0.5 × 0.75.
    close(&v["predicted_request_rate"], 1.375);
    // Three jobs overlap, two of them heavy: 3000 + 500 + 3000; scaled by 1.375.
    close(&v["observed_peak_concurrent_mb"], 6500.0);
    close(&v["peak_concurrent_mb"], 6500.0 * 1.375);
    assert_eq!(v["capacity_advice"], "scale-up");
    let gbh = 12.0 * 2.5 * (3000.0 + 500.0) / 1024.0;
    close(&v["memory_demand_gbh"], 1.375 * 24.0 * gbh / 24.0);
    assert_eq!(v["top_callers"][0]["job_key"], "bulk-align");
    close(
        &v["top_callers"][0]["memory_gbh"],
        12.0 * 2.5 * 3000.0 / 1024.0,
    );
    assert!(has_action(&v, "pre-warm"), "{:?}", actions(&v));
    assert!(
        has_action(&v, "throttle or schedule off-peak: bulk-align"),
        "{:?}",
        actions(&v)
    );
    assert!(has_action(&v, "scale up"), "{:?}", actions(&v));
    assert!(!has_action(&v, "throttle or schedule off-peak: qc"));
    assert!(!has_action(&v, "maintain"));
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "10000")
        .args(["forecast", "--now", NOW])
        .output()
        .unwrap();
    let md = stdout(&o);
    assert!(
        md.contains("| demand level | **critical** (surge factor 4.00) |"),
        "{md}"
    );
    assert!(md.contains("\n- pre-warm: "), "{md}");
}

#[test]
fn sparse_history_uses_the_previous_active_window() {
    // Three jobs five days ago, then nothing until six jobs in the last day.
    let env = Env::new();
    let mut jobs = Vec::new();
    for k in 0..3 {
        jobs.push(job(
            &format!("old{k}"),
            "monthly",
            118.0 + 3.0 * k as f64,
            0.5,
            800,
        ));
    }
    for k in 0..6 {
        jobs.push(job(
            &format!("new{k}"),
            "monthly",
            2.0 + 3.0 * k as f64,
            0.5,
            800,
        ));
    }
    store_with(&env, &jobs);
    let v = forecast(&env, 8000);
    // A calendar window (the 24 h before the recent one) would be empty.
    assert_eq!(v["baseline_window"]["to"], "2026-01-05T14:00:00.000Z");
    assert_eq!(v["baseline_window"]["from"], "2026-01-04T14:00:00.000Z");
    assert_eq!(v["baseline_window"]["jobs"], 3);
    close(&v["baseline_request_rate"], 3.0 / 24.0);
    close(&v["surge_factor"], 2.0);
    assert_eq!(v["demand_level"], "elevated");
    assert_eq!(v["resource_mode"], "surge");
    assert_eq!(v["dispatch_posture"], "normal");
    assert!(has_action(&v, "pre-warm"), "{:?}", actions(&v));
    // One 800 MB job at a time is 10 % of the budget.
    assert_eq!(v["capacity_advice"], "scale-down");
    close(&v["advice_confidence"], 0.3);

    // Before any job, and with no earlier history: nothing to compare, nothing to do.
    let empty = Env::new();
    let v = forecast(&empty, 8000);
    assert!(v["baseline_window"].is_null() && v["baseline_request_rate"].is_null());
    close(&v["surge_factor"], 0.0);
    assert_eq!(v["demand_level"], "low");
    assert_eq!(actions(&v), ["maintain current allocation"]);
    close(&v["advice_confidence"], 0.0);

    // History only inside the recent window: a factor of 1, half the confidence.
    let fresh = Env::new();
    store_with(&fresh, &jobs[3..]);
    let v = forecast(&fresh, 3000);
    assert!(v["baseline_window"].is_null());
    close(&v["surge_factor"], 1.0);
    close(&v["advice_confidence"], 0.15);
    assert_eq!(v["capacity_advice"], "maintain");
    assert_eq!(actions(&v), ["maintain current allocation"]);
}

#[test]
fn failure_burst_degrades_and_names_what_to_investigate() {
    let env = Env::new();
    let mut jobs = Vec::new();
    // Twelve ok nightly reports; half of them exceeded their upper bound (150 MB).
    for k in 0..12 {
        let mut a = job(
            &format!("n{k}"),
            "nightly-report",
            1.0 + 1.5 * k as f64,
            0.2,
            1000,
        );
        a.upper.1 = 150.0;
        a.actual = Some((60.0, if k % 2 == 0 { 200.0 } else { 100.0 }, 720.0));
        jobs.push(a);
    }
    // Three OOM kills and a timeout under enforced predicted limits.
    for k in 0..4 {
        let mut a = job(
            &format!("x{k}"),
            "scanpy-big",
            2.5 + 4.0 * k as f64,
            0.3,
            2000,
        );
        a.outcome = if k < 3 {
            Outcome::OomKilled
        } else {
            Outcome::TimedOut
        };
        jobs.push(a);
    }
    // A flaky job: three of four attempts fail (non-zero exit).
    for k in 0..4 {
        let mut a = job(
            &format!("f{k}"),
            "flaky-etl",
            3.0 + 5.0 * k as f64,
            0.1,
            300,
        );
        if k > 0 {
            a.outcome = Outcome::Failed;
        }
        jobs.push(a);
    }
    // A dry-run kill does not count as a failure under predicted limits.
    let mut d = job("dry", "dry-run-job", 4.0, 0.1, 300);
    d.dry_run = true;
    d.outcome = Outcome::OomKilled;
    jobs.push(d);
    // The same rate the day before.
    for k in 0..21 {
        jobs.push(job(
            &format!("b{k}"),
            "nightly-report",
            25.0 + k as f64,
            0.2,
            1000,
        ));
    }
    store_with(&env, &jobs);
    let v = forecast(&env, 16000);
    assert_eq!(v["recent_window"]["jobs"], 21);
    close(&v["surge_factor"], 1.0);
    assert_eq!(v["demand_level"], "low");
    assert_eq!(v["failures_under_predicted_limits"], 4);
    assert_eq!(v["resource_mode"], "surge");
    assert_eq!(v["dispatch_posture"], "degraded");
    let acts = actions(&v);
    assert!(
        has_action(&v, "investigate model reliability: 4 "),
        "{acts:?}"
    );
    assert!(has_action(&v, "investigate scanpy-big: 4 of 4"), "{acts:?}");
    assert!(has_action(&v, "investigate flaky-etl: 3 of 4"), "{acts:?}");
    assert!(!has_action(&v, "investigate nightly-report"), "{acts:?}");
    assert!(!has_action(&v, "investigate dry-run-job"), "{acts:?}");
    // 6 of 12 nightly + the one ok flaky run: 7 of 13 ≤ upper, far below 95 %.
    let rss = v["calibration"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == "peak_rss_mb")
        .unwrap()
        .clone();
    close(&rss["share_within_upper"], 7.0 / 13.0);
    assert!(has_action(&v, "retrain now"), "{acts:?}");
    assert!(!has_action(&v, "pre-warm") && !has_action(&v, "maintain"));
    let flaky = v["top_callers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["job_key"] == "flaky-etl")
        .unwrap()
        .clone();
    close(&flaky["failure_rate"], 0.75);

    // The default output is Markdown with the same story.
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "16000")
        .args(["forecast", "--now", NOW])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let md = stdout(&o);
    assert!(md.starts_with("# presize forecast"), "{md}");
    assert!(md.contains("| dispatch posture | **degraded** |"), "{md}");
    assert!(md.contains("- investigate flaky-etl"), "{md}");
    assert!(md.contains("| flaky-etl | 4 | 4 |"), "{md}");
}

#[test]
fn bad_forecast_arguments_are_usage_errors() {
    let env = Env::new();
    for h in ["0", "-3", "nan", "100000"] {
        let o = env.run(&["forecast", &format!("--horizon={h}")]);
        assert_clean_error(&o, 2, "horizon");
    }
    let o = env.run(&["forecast", "--now", "yesterday"]);
    assert_clean_error(&o, 2, "--now");
    // Without --now the clock is used.
    let o = env.run(&["forecast", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let now = humantime::parse_rfc3339_weak(v["now"].as_str().unwrap()).unwrap();
    assert!(SystemTime::now().duration_since(now).unwrap().as_secs() < 60);
}
