//! Lean rows (issue 17): a store written before migration V11 (features as JSON text) is
//! converted to the compact form and keeps every value; unreadable features are reported.

use rusqlite::{params, Connection};
use serde_json::Value;

use presize::features::Catalog;
use presize::features::Schema;

use crate::helper::{repo, stdout, Env};

/// A store at migration V10 (the schema before V11), built with refinery from the
/// repository's own migration files, as an older presize left it.
fn v10_store(env: &Env) -> Connection {
    std::fs::create_dir_all(env.db.parent().unwrap()).unwrap();
    let mut files: Vec<(u32, String, String)> = std::fs::read_dir(repo("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            let v: u32 = stem.strip_prefix('V')?.split_once("__")?.0.parse().ok()?;
            Some((v, stem, std::fs::read_to_string(&p).ok()?))
        })
        .filter(|(v, _, _)| *v <= 10)
        .collect();
    files.sort();
    assert_eq!(files.last().unwrap().0, 10);
    let migrations: Vec<refinery::Migration> = files
        .iter()
        .map(|(_, name, sql)| refinery::Migration::unapplied(name, sql).unwrap())
        .collect();
    let mut c = Connection::open(&env.db).unwrap();
    refinery::Runner::new(&migrations).run(&mut c).unwrap();
    c
}

fn insert(c: &Connection, features: &str, schema_hash: &str) -> i64 {
    c.execute(
        "INSERT INTO resource_prediction (job_id, job_key, runtime, command, features,
            schema_hash, model_version, host, predicted_at, settled_at, outcome,
            actual_cpu_s, actual_rss_mb, actual_wall_s)
         VALUES ('j', 'k', 'python', '[]', ?1, ?2, 'm', 'h', 't', 't', 'ok', 1, 100, 2)",
        params![features, schema_hash],
    )
    .unwrap();
    c.last_insert_rowid()
}

fn ok_stderr(o: &std::process::Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_old_store_is_converted_and_keeps_every_value() {
    let env = Env::new();
    let c = v10_store(&env);
    let schema = Schema::for_catalog(&Catalog::builtin());
    // A full vector of the current schema, with awkward values, plus a name the current
    // schema does not know (a retired feature).
    let awkward: [f64; 11] = [
        0.0,
        -0.0,
        1.0,
        -3.0,
        1e300,
        -2.5e-308,
        5e-324,
        0.1,
        2.0444393157958984,
        9007199254740993.0,
        123456789.123,
    ];
    let mut full = serde_json::Map::new();
    for (i, n) in schema.names.iter().enumerate() {
        full.insert(n.clone(), Value::from(awkward[i % awkward.len()]));
    }
    full.insert("retired_feature".into(), Value::from(12.5));
    let full = Value::Object(full).to_string();
    let texts = [
        full.clone(),
        // JSON integers and null, names of another schema.
        r#"{"lang_python": 1, "tokens": -42, "input_total_mb": null, "z": 9223372036854775807}"#
            .to_string(),
        // Not numbers: stays text, read as before (absent).
        r#"{"lang_python": 1.0, "note": "hand-edited"}"#.to_string(),
        // Not JSON: stays text, reported as unreadable.
        r#"{"lang_python": 1.0, "tokens": "#.to_string(),
        "{}".to_string(),
    ];
    let ids: Vec<i64> = texts.iter().map(|t| insert(&c, t, &schema.hash)).collect();
    drop(c);

    // The first open (any command) migrates; the export shows every value.
    let o = env.run(&["export", "--jsonl"]);
    let err = ok_stderr(&o);
    assert!(
        err.contains("1 row(s) with unreadable features")
            && err.contains(&format!("row {}", ids[3])),
        "{err}"
    );
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), texts.len());
    for (i, (l, t)) in lines.iter().zip(&texts).enumerate() {
        assert_eq!(l["id"], ids[i]);
        match serde_json::from_str::<Value>(t) {
            Ok(want) => {
                assert_eq!(l["features"], want, "row {i}");
                // Same text too: float formatting, -0.0, integers stay integers.
                assert_eq!(l["features"].to_string(), want.to_string(), "row {i}");
            }
            Err(_) => assert_eq!(l["features"], Value::String(t.clone())),
        }
    }
    assert_eq!(lines[0]["features"]["retired_feature"], 12.5);

    let c = Connection::open(&env.db).unwrap();
    let kinds: Vec<String> = c
        .prepare("SELECT typeof(features) FROM resource_prediction ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds, ["blob", "blob", "text", "text", "blob"]);
    let (lists, pending): (i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM feature_names), (SELECT count(*) FROM pending_conversion)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((lists, pending), (3, 0));
    // Smaller: the full vector's blob against its JSON text.
    let n: i64 = c
        .query_row(
            "SELECT length(features) FROM resource_prediction WHERE id = ?1",
            [ids[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert!(n * 4 < full.len() as i64, "{n} vs {}", full.len());

    // CSV: the current schema's columns, values as stored; the unreadable row's cells empty.
    let o = env.run(&["export", "--csv"]);
    let err = ok_stderr(&o);
    assert!(err.contains("1 row(s) with unreadable features"), "{err}");
    let out = stdout(&o);
    let mut rd = csv::Reader::from_reader(out.as_bytes());
    let header = rd.headers().unwrap().clone();
    let recs: Vec<csv::StringRecord> = rd.records().collect::<Result<_, _>>().unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (i, n) in schema.names.iter().enumerate() {
        let want = awkward[i % awkward.len()];
        let got: f64 = recs[0][col(&format!("f_{n}"))].parse().unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{n}");
    }
    assert_eq!(&recs[1][col("f_tokens")], "-42");
    assert_eq!(&recs[1][col("f_input_total_mb")], "0");
    assert_eq!(&recs[2][col("f_lang_python")], "1");
    assert_eq!(&recs[3][col("f_lang_python")], "");
    assert_eq!(&recs[4][col("f_lang_python")], "0");

    // A damaged blob is reported too, by export and by retrain (left out of training; the
    // message names the newest such row, the first retrain reads).
    c.execute(
        "UPDATE resource_prediction SET features = x'01ff' WHERE id = ?1",
        [ids[1]],
    )
    .unwrap();
    drop(c);
    let o = env.run(&["export", "--jsonl"]);
    let err = ok_stderr(&o);
    assert!(err.contains("2 row(s) with unreadable features"), "{err}");
    let o = env.run(&["retrain", "--json"]);
    ok_stderr(&o);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["settled_rows"], 5);
    assert_eq!(r["used_rows"], 3);
    assert_eq!(r["unreadable_rows"], 2);
    let m = r["message"].as_str().unwrap();
    assert!(
        m.contains("2 row(s) with unreadable features left out")
            && m.contains(&format!("row {}", ids[3]))
            && m.contains("not a JSON object"),
        "{m}"
    );
}

#[test]
fn new_rows_are_small() {
    let env = Env::new();
    let script = crate::helper::fixture("analysis.py");
    for _ in 0..2 {
        let o = env.run(&[
            "run",
            "-q",
            "--script",
            script.to_str().unwrap(),
            "--",
            "true",
        ]);
        ok_stderr(&o);
    }
    let c = Connection::open(&env.db).unwrap();
    let sizes: Vec<(String, i64)> = c
        .prepare("SELECT typeof(features), length(features) FROM resource_prediction")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sizes.len(), 2);
    for (t, n) in sizes {
        // The JSON text of the same ~80 features is ~2 KB.
        assert_eq!(t, "blob");
        assert!(n < 250, "{n} bytes");
    }
}

/// Run presize with `args` on a pseudo-terminal (util-linux `script`); returns the exit
/// status and what the terminal showed.
fn on_a_terminal(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(env!("CARGO_BIN_EXE_presize"));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line.push_str(" > /dev/null");
    let base = env.cmd();
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().expect("util-linux script");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn the_conversion_shows_progress_on_a_terminal_only() {
    let (tty, pipe) = (Env::new(), Env::new());
    for env in [&tty, &pipe] {
        let c = v10_store(env);
        c.execute_batch("BEGIN").unwrap();
        for i in 0..2500 {
            insert(
                &c,
                &format!(r#"{{"tokens": {i}.0, "lang_python": 1.0}}"#),
                "h",
            );
        }
        c.execute_batch("COMMIT").unwrap();
    }
    let (code, screen) = on_a_terminal(&tty, &["stats", "--json"]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("migration V11: compacting stored features, row 2000 of 2500")
            && screen.contains("2500 rows' features compacted, 0 kept as JSON text"),
        "{screen:?}"
    );
    let o = pipe.run(&["stats", "--json"]);
    ok_stderr(&o);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for env in [&tty, &pipe] {
        let blobs: i64 = Connection::open(&env.db)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM resource_prediction WHERE typeof(features) = 'blob'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(blobs, 2500);
    }
}
