//! `presize export --csv|--jsonl [--out F]`: every row, features in the wide form.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::helper::{fixture, stdout, Env};

fn ok(o: &std::process::Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn exports_every_row_with_every_stored_feature() {
    let env = Env::new();
    let script = fixture("analysis.py");
    let s = script.to_str().unwrap();
    // What `predict` computes for the first run of a key (no history, so no prior_*
    // values) is what `run` stores: the truth the export is checked against.
    let p = env.run(&[
        "predict",
        "--json",
        "--job-key",
        "exp-1",
        "--script",
        s,
        "--",
        "true",
    ]);
    ok(&p);
    let predicted: Value = serde_json::from_str(&stdout(&p)).unwrap();
    let first = predicted["features"].clone();
    assert!(first.as_object().unwrap().len() >= 60, "{first}");
    for _ in 0..3 {
        ok(&env.run(&[
            "run",
            "-q",
            "--job-key",
            "exp-1",
            "--script",
            s,
            "--",
            "true",
        ]));
    }
    let ids: Vec<(i64, String)> = env
        .conn()
        .prepare("SELECT id, typeof(features) FROM resource_prediction ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len(), 3);
    // Stored compactly (migration V11), not as JSON text.
    assert!(ids.iter().all(|(_, t)| t == "blob"), "{ids:?}");

    // JSON lines: every name the row was recorded with, value for value.
    let o = env.run(&["export", "--jsonl"]);
    ok(&o);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (l, (id, _)) in lines.iter().zip(&ids) {
        assert_eq!(l["id"], *id);
        assert_eq!(l["outcome"], "ok");
        assert!(l["schema_hash"].as_str().unwrap().len() >= 16);
        assert_eq!(
            l["features"].as_object().unwrap().len(),
            first.as_object().unwrap().len()
        );
    }
    assert_eq!(lines[0]["features"], first);
    // Later runs differ from the first only in what the key's history says.
    assert!(lines[2]["features"]["prior_count"].as_f64().unwrap() >= 1.0);

    // CSV to a private file: one f_<name> column per feature, the values of the JSON lines.
    let out = env.dir.path().join("rows.csv");
    let o = env.run(&["export", "--csv", "--out", out.to_str().unwrap()]);
    ok(&o);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut rd = csv::Reader::from_path(&out).unwrap();
    let header = rd.headers().unwrap().clone();
    let recs: Vec<csv::StringRecord> = rd.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.len(), 3);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (rec, l) in recs.iter().zip(&lines) {
        assert_eq!(rec[col("id")], l["id"].to_string());
        for (k, v) in l["features"].as_object().unwrap() {
            let got: f64 = rec[col(&format!("f_{k}"))].parse().unwrap();
            assert_eq!(got, v.as_f64().unwrap(), "{k}");
        }
    }

    // A format is required, and only one.
    assert_eq!(env.run(&["export"]).status.code(), Some(2));
    assert_eq!(
        env.run(&["export", "--csv", "--jsonl"]).status.code(),
        Some(2)
    );
}
