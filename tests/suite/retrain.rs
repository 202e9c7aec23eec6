//! `presize retrain`: refuses small histories, promotes only when not worse, survives a
//! corrupt model file. Histories are written through the library's store API.

use std::collections::BTreeMap;
use std::sync::Arc;

use presize::features::{Catalog, Schema};
use presize::job::{LimitSource, Outcome};
use presize::model::trained::{TrainConfig, TrainedModel};
use presize::model::{Bounds, Prediction, Source};
use presize::policy::Limits;
use presize::store::{NewPrediction, Settlement, Store};
use serde_json::Value;

use crate::helper::{fixture, stdout, Env};

fn noise(i: usize) -> f64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

fn features(i: usize) -> BTreeMap<String, f64> {
    let input = 1.0 + (i * 37 % 100) as f64;
    let mut f = BTreeMap::new();
    f.insert("lang_python".to_string(), 1.0);
    f.insert("input_total_mb".to_string(), input);
    f.insert("lib_pandas_imported".to_string(), (i % 2) as f64);
    f
}

/// `scale` multiplies every actual (a drift between eras).
fn seed(env: &Env, from: usize, n: usize, scale: f64) {
    let mut store = Store::open(&env.db).unwrap();
    let schema = Schema::for_catalog(&Catalog::builtin());
    for i in from..from + n {
        let f = features(i);
        let input = f["input_total_mb"];
        let rss = scale * (40.0 + 90.0 * f["lib_pandas_imported"] + 3.0 * input);
        let wall = scale * (0.5 + 0.02 * input);
        let pred = Prediction {
            cpu_seconds: 1.0,
            peak_rss_mb: 100.0,
            wall_seconds: 1.0,
            confidence: 0.01,
            upper: Bounds {
                peak_rss_mb: 200.0,
                wall_seconds: 2.0,
                cpu_seconds: 2.0,
            },
            lower: Bounds {
                peak_rss_mb: 10.0,
                wall_seconds: 0.1,
                cpu_seconds: 0.1,
            },
            model_version: "prior-test".into(),
            source: Source::Prior,
        };
        let lim = Limits {
            memory_limit_mb: 8192,
            timeout_s: 3600,
            enforced: true,
        };
        let id = store
            .insert_prediction(&NewPrediction {
                job_id: format!("j{i}"),
                analysis_id: None,
                job_key: format!("k{}", i % 5),
                runtime: "python".into(),
                script_path: None,
                script_sha256: None,
                command_json: "[\"python3\",\"x.py\"]".into(),
                features_json: serde_json::to_string(&f).unwrap(),
                schema_hash: schema.hash.clone(),
                prediction: pred,
                predicted: lim,
                applied: Some(lim),
                memory_source: Some(LimitSource::Predicted),
                timeout_source: Some(LimitSource::Predicted),
                memory_enforced: true,
                dry_run: false,
                backend: "test".into(),
                priority: "normal".into(),
                attempt: 1,
                host: "test-host".into(),
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
                    actual_cpu_s: Some(wall * 0.9 * (1.0 + 0.1 * noise(i + 7))),
                    actual_rss_mb: Some(rss * (1.0 + 0.1 * noise(i))),
                    actual_wall_s: Some(wall * (1.0 + 0.1 * noise(i + 3))),
                    rusage_maxrss_mb: None,
                    measure_source: "test".into(),
                    exit_code: Some(0),
                    signal: None,
                    outcome: Outcome::Ok,
                    memory_enforced: true,
                },
            )
            .unwrap();
    }
}

fn retrain(env: &Env, extra: &[&str]) -> Value {
    let mut args = vec!["retrain", "--json"];
    args.extend_from_slice(extra);
    let o = env.run(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn predict(env: &Env) -> Value {
    let o = env.run(&[
        "predict",
        "--json",
        fixture("analysis.py").to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn refuses_with_too_few_rows() {
    let env = Env::new();
    seed(&env, 0, 60, 1.0);
    let v = retrain(&env, &[]);
    assert_eq!(v["status"], "not_enough_rows");
    assert_eq!(v["promoted"], false);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("not enough settled rows"));
    assert!(!env.models.join("current").exists());
    assert_eq!(predict(&env)["source"], "prior");
}

#[test]
fn promotes_first_model_then_survives_a_corrupt_file() {
    let env = Env::new();
    seed(&env, 0, 200, 1.0);
    let v = retrain(&env, &[]);
    assert_eq!(v["status"], "promoted", "{v}");
    assert_eq!(v["train_rows"], 160);
    assert_eq!(v["holdout_rows"], 40);
    let cand = &v["candidate"]["targets"][1];
    assert_eq!(cand["target"], "peak_rss_mb");
    assert!(cand["mape"].as_f64().unwrap() < 0.15, "{cand}");
    let p = predict(&env);
    assert_eq!(p["source"], "model");
    assert_eq!(p["model_version"], v["candidate"]["version"]);
    let n: i64 = env
        .conn()
        .query_row(
            "SELECT count(*) FROM model_version WHERE promoted = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    // Corrupt the promoted file: predictions fall back to the prior with a warning.
    let path = v["model_path"].as_str().unwrap();
    std::fs::write(path, b"{\"format_version\": 1, \"kind\": \"presize-gbt\"").unwrap();
    let p = predict(&env);
    assert_eq!(p["source"], "prior");
    assert!(p["warnings"].to_string().contains("unreadable"), "{p}");
    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    // And retraining replaces it.
    let v = retrain(&env, &[]);
    assert_eq!(v["status"], "promoted");
    assert_eq!(predict(&env)["source"], "model");
}

#[test]
fn keeps_a_better_current_model_unless_forced() {
    let env = Env::new();
    // Era A (first 80 %) and era B (latest 20 %, twice the memory): a candidate trained on
    // the first 80 % must lose on the holdout against a current model that knows era B.
    seed(&env, 0, 160, 1.0);
    seed(&env, 160, 40, 2.0);
    let era_b = Env::new();
    seed(&era_b, 1000, 200, 2.0);
    let schema = Arc::new(Schema::for_catalog(&Catalog::builtin()));
    let rows = Store::open(&era_b.db)
        .unwrap()
        .training_rows(&schema.names, usize::MAX)
        .unwrap()
        .rows;
    let current = TrainedModel::train(
        &rows,
        &schema,
        &TrainConfig::default(),
        "gbt-era-b".into(),
        &mut |_| {},
    )
    .unwrap();
    presize::model::save_model(&env.models, &current, true).unwrap();
    let v = retrain(&env, &[]);
    assert_eq!(v["status"], "kept", "{v}");
    assert_eq!(v["current"]["version"], "gbt-era-b");
    assert_eq!(predict(&env)["model_version"], "gbt-era-b");
    let v = retrain(&env, &["--force"]);
    assert_eq!(v["status"], "promoted");
    assert_ne!(predict(&env)["model_version"], "gbt-era-b");
}

#[test]
fn trains_on_the_latest_max_train_rows_only() {
    let env = Env::with_config("[model]\nmax_train_rows = 150\n");
    // 100 old rows of another era (10× the memory), then 200 current ones: only the latest
    // 150 are read, so the model knows the current era alone.
    seed(&env, 0, 100, 10.0);
    seed(&env, 100, 200, 1.0);
    let v = retrain(&env, &[]);
    assert_eq!(v["status"], "promoted", "{v}");
    assert_eq!(v["settled_rows"], 300);
    assert_eq!(v["used_rows"], 150);
    assert_eq!(v["train_rows"], 120);
    assert_eq!(v["holdout_rows"], 30);
    let cand = &v["candidate"]["targets"][1];
    assert!(cand["mape"].as_f64().unwrap() < 0.15, "{cand}");
    let o = env.run(&["retrain"]);
    assert!(
        stdout(&o).contains("(the latest 150: [model] max_train_rows)"),
        "{}",
        stdout(&o)
    );
    // Below the fewest rows retrain trains on: a config error, exit 2 per DESIGN.md.
    let bad = Env::with_config("[model]\nmax_train_rows = 5\n");
    let o = bad.run(&["retrain"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("max_train_rows"));
}
