//! `presize stats --json` on a store with known jobs returns hand-computed numbers.

use presize::job::{LimitSource, Outcome};
use presize::model::{Bounds, Prediction, Source};
use presize::policy::Limits;
use presize::store::{NewPrediction, Settlement, Store};
use serde_json::Value;

use crate::helper::{stdout, Env};

struct Job {
    pred_rss: f64,
    upper_rss: f64,
    limit_mb: u64,
    timeout_s: u64,
    applied_mb: u64,
    dry_run: bool,
    actual_rss: f64,
    wall_s: f64,
    outcome: Outcome,
}

fn add(store: &mut Store, i: usize, j: &Job) {
    let b = |v: f64| Bounds {
        peak_rss_mb: v,
        wall_seconds: 10.0,
        cpu_seconds: 10.0,
    };
    let id = store
        .insert_prediction(&NewPrediction {
            job_id: format!("j{i}"),
            analysis_id: None,
            job_key: "k".into(),
            runtime: "python".into(),
            script_path: None,
            script_sha256: None,
            command_json: "[]".into(),
            features_json: "{}".into(),
            schema_hash: "x".into(),
            prediction: Prediction {
                cpu_seconds: 1.0,
                peak_rss_mb: j.pred_rss,
                wall_seconds: 1.0,
                confidence: 0.5,
                upper: b(j.upper_rss),
                lower: b(1.0),
                model_version: "gbt-test".into(),
                source: Source::Model,
            },
            predicted: Limits {
                memory_limit_mb: j.limit_mb,
                timeout_s: j.timeout_s,
                enforced: !j.dry_run,
            },
            applied: Some(Limits {
                memory_limit_mb: j.applied_mb,
                timeout_s: 3600,
                enforced: !j.dry_run,
            }),
            memory_source: Some(if j.dry_run {
                LimitSource::DryRun
            } else {
                LimitSource::Predicted
            }),
            timeout_source: Some(if j.dry_run {
                LimitSource::DryRun
            } else {
                LimitSource::Predicted
            }),
            memory_enforced: true,
            dry_run: j.dry_run,
            backend: "test".into(),
            priority: "normal".into(),
            attempt: 1,
            host: "h".into(),
            executor_pid: 1,
            executor_start: None,
            rejected: false,
            sizing: Default::default(),
            size: Default::default(),
        })
        .unwrap();
    store
        .settle(
            id,
            &Settlement {
                actual_cpu_s: Some(1.0),
                actual_rss_mb: Some(j.actual_rss),
                actual_wall_s: Some(j.wall_s),
                rusage_maxrss_mb: None,
                measure_source: "test".into(),
                exit_code: Some(0),
                signal: None,
                outcome: j.outcome,
                memory_enforced: true,
            },
        )
        .unwrap();
}

fn close(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

#[test]
fn exact_accuracy_coverage_slack_and_savings() {
    let env = Env::new();
    let mut store = Store::open(&env.db).unwrap();
    let jobs = [
        // enforced, ok: cap 150, peak 120, 1 h
        Job {
            pred_rss: 100.0,
            upper_rss: 150.0,
            limit_mb: 150,
            timeout_s: 3600,
            applied_mb: 150,
            dry_run: false,
            actual_rss: 120.0,
            wall_s: 3600.0,
            outcome: Outcome::Ok,
        },
        // enforced, ok: cap 300, peak 180, 0.5 h
        Job {
            pred_rss: 200.0,
            upper_rss: 250.0,
            limit_mb: 300,
            timeout_s: 3600,
            applied_mb: 300,
            dry_run: false,
            actual_rss: 180.0,
            wall_s: 1800.0,
            outcome: Outcome::Ok,
        },
        // enforced, OOM-killed at 64 after 0.1 h
        Job {
            pred_rss: 50.0,
            upper_rss: 60.0,
            limit_mb: 64,
            timeout_s: 3600,
            applied_mb: 64,
            dry_run: false,
            actual_rss: 64.0,
            wall_s: 360.0,
            outcome: Outcome::OomKilled,
        },
        // dry run, would have fit in 150 (static 8192 applied), 1 h
        Job {
            pred_rss: 100.0,
            upper_rss: 150.0,
            limit_mb: 150,
            timeout_s: 7200,
            applied_mb: 8192,
            dry_run: true,
            actual_rss: 90.0,
            wall_s: 3600.0,
            outcome: Outcome::Ok,
        },
        // dry run, would have been OOM-killed (200 > 150) and timed out (7200 s > 60 s)
        Job {
            pred_rss: 100.0,
            upper_rss: 150.0,
            limit_mb: 150,
            timeout_s: 60,
            applied_mb: 8192,
            dry_run: true,
            actual_rss: 200.0,
            wall_s: 7200.0,
            outcome: Outcome::Ok,
        },
    ];
    for (i, j) in jobs.iter().enumerate() {
        add(&mut store, i, j);
    }
    drop(store);
    let o = env.run(&["stats", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["jobs"], 5);
    assert_eq!(v["outcomes"]["ok"], 4);
    assert_eq!(v["outcomes"]["oom_killed"], 1);
    let rss = &v["targets"][0];
    assert_eq!(rss["target"], "peak_rss_mb");
    assert_eq!(rss["n"], 4);
    // actual [120,180,90,200], predicted [100,200,100,100]: mean 147.5, SS_tot 7875,
    // SS_res 10900 → R² = 1 − 10900/7875.
    close(&rss["r2"], 1.0 - 10900.0 / 7875.0);
    // APEs 20/120, 20/180, 10/90, 100/200.
    close(
        &rss["mape"],
        (20.0 / 120.0 + 20.0 / 180.0 + 10.0 / 90.0 + 0.5) / 4.0,
    );
    // Sorted APEs 1/9, 1/9, 1/6, 1/2 → median (1/9 + 1/6) / 2.
    close(&rss["median_ape"], (20.0 / 180.0 + 20.0 / 120.0) / 2.0);
    // Upper bounds 150, 250, 150, 150 cover 120, 180, 90 but not 200.
    close(&rss["calibration"], 0.75);
    close(&rss["nominal_coverage"], 0.95);
    // Cap coverage over 5 measured jobs: 120≤150, 180≤300, 90≤150 covered; 200>150 and the
    // OOM kill not.
    close(&v["cap_coverage"], 0.6);
    let im = &v["impact"];
    assert_eq!(im["oom_kills"], 1);
    assert_eq!(im["predicted_cap_attempts"], 3);
    assert_eq!(v["attempts"], 5);
    // Slack: (150−120)/1024·1 + (300−180)/1024·0.5 + 64/1024·0.1 (killed: whole cap).
    let slack = 30.0 / 1024.0 + 120.0 / 1024.0 * 0.5 + 64.0 / 1024.0 * 0.1;
    close(&im["slack_gbh"], slack);
    // Static 8192: (8192−120)/1024·1 + (8192−180)/1024·0.5.
    let stat = 8072.0 / 1024.0 + 8012.0 / 1024.0 * 0.5;
    close(&im["static_slack_gbh"], stat);
    close(&im["saved_gbh"], stat - slack);
    let d = &im["dry_run"];
    assert_eq!(d["jobs"], 2);
    assert_eq!(d["would_oom"], 1);
    assert_eq!(d["would_timeout"], 1);
    close(&d["saved_gbh"], (8192.0 - 150.0) / 1024.0);
    // The human table carries the same story.
    let o = env.run(&["stats"]);
    let s = stdout(&o);
    assert!(
        s.contains("GB·h saved") && s.contains("dry run: 2 jobs"),
        "{s}"
    );
}
