//! `presize replay` on the nf-core traces: beats the best published reference method on
//! every workflow with at most 1.5× its failures, one configuration for all.

use serde_json::Value;

use crate::helper::{assert_clean_error, repo, stdout, Env};

#[test]
fn replay_beats_the_best_reference_on_every_workflow() {
    let env = Env::new();
    let traces: Vec<String> = ["eager", "methylseq", "rnaseq"]
        .iter()
        .map(|w| {
            repo(&format!("tests/data/nfcore-traces/trace_{w}.csv"))
                .display()
                .to_string()
        })
        .collect();
    let mut args = vec!["replay", "--json"];
    args.extend(traces.iter().map(String::as_str));
    let o = env.run(&args);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    // Best reference per workflow (shared/data/README.md, the paper's code, seed 1996).
    let reference = [
        ("eager", 624.1, 39.0),
        ("methylseq", 629.9, 99.0),
        ("rnaseq", 57.9, 82.0),
    ];
    let wf = v["workflows"].as_array().unwrap();
    assert_eq!(wf.len(), 3);
    for (w, (name, waste, fails)) in wf.iter().zip(reference) {
        assert!(w["name"].as_str().unwrap().contains(name));
        let got = w["wastage_gbh"].as_f64().unwrap();
        let f = w["failures"].as_f64().unwrap();
        assert!(got < waste, "{name}: {got} GB·h ≥ {waste}");
        assert!(f <= 1.5 * fails, "{name}: {f} failures > 1.5 × {fails}");
        assert!(w["processes_used"].as_u64().unwrap() > 0);
    }
    // The harness reproduces the published Tovar numbers exactly.
    let mut args = vec!["replay", "--json", "--policy", "tovar"];
    args.extend(traces.iter().map(String::as_str));
    let v: Value = serde_json::from_str(&stdout(&env.run(&args))).unwrap();
    let tovar: Vec<(f64, u64)> = v["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                (w["wastage_gbh"].as_f64().unwrap() * 10.0).round() / 10.0,
                w["failures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tovar, vec![(624.1, 39), (4080.6, 58), (195.3, 55)]);
}

#[test]
fn bad_traces_are_one_line_errors() {
    let env = Env::new();
    let empty = env.path("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let o = env.run(&["replay", empty.to_str().unwrap()]);
    assert_clean_error(&o, 2, "empty.csv");
    let nocol = env.path("nocol.csv");
    std::fs::write(&nocol, "a,b\n1,2\n").unwrap();
    let o = env.run(&["replay", nocol.to_str().unwrap()]);
    assert_clean_error(&o, 2, "nocol.csv");
    let o = env.run(&["replay", env.path("missing.csv").to_str().unwrap()]);
    assert_clean_error(&o, 2, "missing.csv");
}
