//! `presize predict`: the DESIGN.md fields and specific feature values per language.

use serde_json::Value;

use crate::helper::{fixture, repo, stdout, Env};

fn predict_json(env: &Env, script: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec!["predict", script.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = env.run(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&stdout(&o)).expect("stdout is one JSON document")
}

fn f(v: &Value, name: &str) -> f64 {
    v["features"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("feature {name} missing in {}", v["features"]))
}

fn assert_contract(v: &Value) {
    for k in ["cpu_seconds", "peak_rss_mb", "wall_seconds", "confidence"] {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
        assert!(x.is_finite() && x >= 0.0, "{k} = {x}");
    }
    let c = v["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c));
    for k in ["peak_rss_mb", "wall_seconds", "cpu_seconds"] {
        let up = v["upper"][k].as_f64().unwrap();
        assert!(up >= v[k].as_f64().unwrap(), "upper {k} below point");
    }
    assert!(v["model_version"].as_str().is_some());
    assert!(matches!(v["source"].as_str(), Some("model" | "prior")));
    let lim = &v["limits"];
    assert!(lim["memory_limit_mb"].as_u64().unwrap() >= 64);
    assert!(lim["timeout_s"].as_u64().unwrap() >= 60);
    assert!(lim["enforced"].is_boolean());
    assert!(v["features"].as_object().is_some_and(|m| m.len() > 30));
    for (k, x) in v["features"].as_object().unwrap() {
        assert!(x.as_f64().is_some_and(f64::is_finite), "feature {k} = {x}");
    }
}

#[test]
fn notebook_scanpy_alias_usage() {
    let env = Env::new();
    let v = predict_json(&env, &fixture("scanpy_notebook.ipynb"), &[]);
    assert_contract(&v);
    assert_eq!(v["language"], "python");
    assert_eq!(f(&v, "lib_scanpy_imported"), 1.0);
    assert_eq!(f(&v, "lib_scanpy_usage"), 3.0);
    assert_eq!(f(&v, "lang_python"), 1.0);
    // Prior: interpreter + scanpy footprint, low confidence → static defaults.
    assert_eq!(v["source"], "prior");
    assert_eq!(v["limits"]["memory_limit_mb"], 8192);
    assert_eq!(v["limits"]["timeout_s"], 3600);
    // Nothing recorded.
    assert!(!env.db.exists());
}

#[test]
fn python_imports_and_tokens() {
    let env = Env::new();
    let v = predict_json(&env, &fixture("analysis.py"), &[]);
    assert_contract(&v);
    let imports: Vec<&str> = v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for m in ["numpy", "pandas", "sklearn"] {
        assert!(imports.contains(&m), "{m} not in {imports:?}");
    }
    assert!(!imports.contains(&"scipy"), "comment counted: {imports:?}");
    assert_eq!(f(&v, "lib_numpy_imported"), 1.0);
    assert_eq!(f(&v, "lib_pandas_imported"), 1.0);
    assert_eq!(f(&v, "lib_scikit_learn_imported"), 1.0);
    assert_eq!(f(&v, "lib_scipy_imported"), 0.0);
    assert_eq!(f(&v, "max_numeric_log10"), 6.0);
    assert!(f(&v, "loops") >= 1.0);
    assert!(f(&v, "read_calls") >= 1.0);
}

#[test]
fn r_and_rmarkdown_imports() {
    let env = Env::new();
    let v = predict_json(&env, &fixture("analysis.R"), &[]);
    assert_contract(&v);
    assert_eq!(v["language"], "r");
    for lib in ["seurat", "deseq2", "edger", "data_table"] {
        assert_eq!(f(&v, &format!("lib_{lib}_imported")), 1.0, "{lib}");
    }
    let v = predict_json(&env, &fixture("report.Rmd"), &[]);
    assert_eq!(v["language"], "r");
    assert_eq!(f(&v, "lib_data_table_imported"), 1.0);
    assert_eq!(f(&v, "lib_edger_imported"), 1.0);
    let imports = v["imports"].to_string();
    assert!(!imports.contains("ggplot2"), "prose counted: {imports}");
}

#[test]
fn shell_programs_and_unknown_language() {
    let env = Env::new();
    let v = predict_json(&env, &fixture("pipeline.sh"), &[]);
    assert_contract(&v);
    assert_eq!(v["language"], "shell");
    let imports = v["imports"].to_string();
    for p in ["samtools", "bwa", "python3"] {
        assert!(imports.contains(p), "{p} not in {imports}");
    }
    let v = predict_json(&env, &fixture("unknown.xyz"), &[]);
    assert_contract(&v);
    assert_eq!(f(&v, "lang_other"), 1.0);
}

#[test]
fn input_sizes_feed_the_prediction() {
    let env = Env::new();
    let input = env.path("big.csv");
    std::fs::write(&input, vec![b'1'; 50 * 1024 * 1024]).unwrap();
    let small = predict_json(&env, &fixture("analysis.py"), &[]);
    let big = predict_json(
        &env,
        &fixture("analysis.py"),
        &["--input", input.to_str().unwrap()],
    );
    assert_eq!(f(&big, "input_count"), 1.0);
    assert!((f(&big, "input_total_mb") - 50.0).abs() < 0.01);
    assert!(
        big["peak_rss_mb"].as_f64().unwrap() > small["peak_rss_mb"].as_f64().unwrap() + 10.0,
        "input size did not raise the prior"
    );
}

#[test]
fn every_example_job_predicts() {
    let env = Env::new();
    let dir = repo("examples/jobs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/jobs") {
        let p = entry.unwrap().path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "py" | "sh" | "R" | "ipynb" | "Rmd") {
            continue;
        }
        let v = predict_json(&env, &p, &[]);
        assert_contract(&v);
        n += 1;
    }
    assert!(n >= 4, "only {n} example jobs");
}

#[test]
fn non_utf8_and_huge_scripts_are_predicted() {
    let env = Env::new();
    let p = env.path("latin1.py");
    std::fs::write(
        &p,
        b"# caf\xe9 \xff\xfe\nimport numpy as np\nx = np.zeros(10)\n",
    )
    .unwrap();
    let v = predict_json(&env, &p, &[]);
    assert_eq!(f(&v, "lib_numpy_imported"), 1.0);
    assert_eq!(v["script_truncated"], false);

    let big = env.path("huge.py");
    let line = "x = [i * 2 for i in range(100)]  # filler\n";
    let body = line.repeat(30 * 1024 * 1024 / line.len() + 1);
    std::fs::write(&big, format!("import pandas as pd\n{body}")).unwrap();
    let v = predict_json(&env, &big, &[]);
    assert_eq!(v["script_truncated"], true);
    assert_eq!(f(&v, "script_truncated"), 1.0);
    assert_eq!(f(&v, "lib_pandas_imported"), 1.0);
}

#[test]
fn human_output_is_a_table() {
    let env = Env::new();
    let o = env.run(&["predict", fixture("analysis.py").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(s.contains("peak RSS MB") && s.contains("limits"), "{s}");
}
