//! `presize export --csv|--jsonl [--out F]`: every row, features in the wide form.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::helper::{fixture, stdout, Env};

#[test]
fn exports_every_row_with_every_stored_feature() {
    let env = Env::new();
    let script = fixture("analysis.py");
    for _ in 0..3 {
        let o = env.run(&[
            "run",
            "-q",
            "--script",
            script.to_str().unwrap(),
            "--",
            "true",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let stored: Vec<(i64, String)> = env
        .conn()
        .prepare("SELECT id, features FROM resource_prediction ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored.len(), 3);

    // JSON lines: the stored object, key for key and value for value.
    let o = env.run(&["export", "--jsonl"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (l, (id, f)) in lines.iter().zip(&stored) {
        assert_eq!(l["id"], *id);
        assert_eq!(l["outcome"], "ok");
        assert!(l["schema_hash"].as_str().unwrap().len() >= 16);
        let want: Value = serde_json::from_str(f).unwrap();
        assert_eq!(l["features"], want);
        assert!(want.as_object().unwrap().len() >= 60, "{want}");
    }

    // CSV to a private file: one f_<name> column per feature, values as stored.
    let out = env.dir.path().join("rows.csv");
    let o = env.run(&["export", "--csv", "--out", out.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut rd = csv::Reader::from_path(&out).unwrap();
    let header = rd.headers().unwrap().clone();
    let recs: Vec<csv::StringRecord> = rd.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.len(), 3);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (rec, (id, f)) in recs.iter().zip(&stored) {
        assert_eq!(rec[col("id")], id.to_string());
        let want: Value = serde_json::from_str(f).unwrap();
        for (k, v) in want.as_object().unwrap() {
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
