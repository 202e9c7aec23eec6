//! The store's own tests: opening, migrations, the key window and training rows.

use super::*;
use crate::features::PriorRuns;
use rusqlite::params;

#[test]
fn migrations_are_idempotent_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/presize.db");
    drop(Store::open(&p).unwrap());
    let s = Store::open(&p).unwrap();
    let n: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM refinery_schema_history", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(n >= 1);
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(p.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
}

fn user_version(s: &Store) -> i64 {
    s.conn()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn latest_migration_matches_the_embedded_list() {
    let max = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap();
    assert_eq!(LATEST_MIGRATION, max);
    assert!(MIGRATIONS_FINGERPRINT > 0 && MIGRATIONS_FINGERPRINT <= i64::from(i32::MAX));
}

#[test]
fn an_up_to_date_store_skips_refinery_and_an_old_one_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("presize.db");
    let s = Store::open(&p).unwrap();
    assert_eq!(user_version(&s), MIGRATIONS_FINGERPRINT);
    // Proof that the second open does not run refinery: a history row refinery would
    // refuse (an applied migration this binary does not have) goes unnoticed.
    s.conn()
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (9999, 'future', '2026-12-03T00:00:00Z', '1')",
            [],
        )
        .unwrap();
    drop(s);
    drop(Store::open(&p).unwrap());
    // With user_version cleared (a store last migrated by an older presize), the full
    // path runs and refuses the unknown migration, as before.
    Connection::open(&p)
        .unwrap()
        .pragma_update(None, "user_version", 0)
        .unwrap();
    let e = Store::open(&p).unwrap_err().to_string();
    assert!(e.contains("could not be migrated"), "{e}");
    // Without it, the full path records the version again.
    let c = Connection::open(&p).unwrap();
    c.execute(
        "DELETE FROM refinery_schema_history WHERE version = 9999",
        [],
    )
    .unwrap();
    drop(c);
    assert_eq!(
        user_version(&Store::open(&p).unwrap()),
        MIGRATIONS_FINGERPRINT
    );
}

#[test]
fn concurrent_first_opens_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("presize.db");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || Store::open(&p).map(|s| user_version(&s)))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), MIGRATIONS_FINGERPRINT);
    }
}

fn insert_run(s: &Store, key: &str, outcome: &str, c: Option<f64>, r: Option<f64>, w: Option<f64>) {
    s.conn()
        .execute(
            "INSERT INTO resource_prediction (job_id, job_key, runtime, command, features,
                schema_hash, model_version, host, predicted_at, settled_at, outcome,
                actual_cpu_s, actual_rss_mb, actual_wall_s)
             VALUES ('j', ?1, 'python', '[]', '{}', 'h', 'm', 'h', 't', 't', ?2, ?3, ?4, ?5)",
            params![key, outcome, c, r, w],
        )
        .unwrap();
}

#[test]
fn prior_runs_summarise_the_latest_window_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("presize.db")).unwrap();
    assert_eq!(s.prior_runs("k", None).unwrap(), PriorRuns::default());
    // 1,300 ok runs of k (some without cpu/wall), others interleaved that must not count.
    let mut want: Vec<(f64, f64, f64)> = Vec::new();
    for i in 0..1300 {
        let c = (i % 7 != 0).then_some(i as f64 * 0.5);
        let r = 100.0 + (i * 37 % 101) as f64;
        let w = (i % 5 != 0).then_some(1.0 + (i % 13) as f64);
        insert_run(&s, "k", "ok", c, Some(r), w);
        want.push((c.unwrap_or(0.0), r, w.unwrap_or(0.0)));
        insert_run(&s, "k", "failed", Some(1e6), Some(1e6), Some(1e6));
        insert_run(&s, "k", "ok", Some(1e6), None, Some(1e6));
        insert_run(&s, "other", "ok", Some(1e6), Some(1e6), Some(1e6));
    }
    let win: Vec<_> = want.iter().rev().take(PRIOR_WINDOW as usize).collect();
    let n = win.len() as f64;
    let got = s.prior_runs("k", None).unwrap();
    assert_eq!(got.count, PRIOR_WINDOW as u32);
    let last = want[want.len() - 1];
    assert_eq!((got.last_cpu_s, got.last_rss_mb, got.last_wall_s), last);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(
        got.mean_cpu_s,
        win.iter().map(|v| v.0).sum::<f64>() / n
    ));
    assert!(close(
        got.mean_rss_mb,
        win.iter().map(|v| v.1).sum::<f64>() / n
    ));
    assert!(close(
        got.mean_wall_s,
        win.iter().map(|v| v.2).sum::<f64>() / n
    ));
    assert_eq!(got.max_cpu_s, win.iter().map(|v| v.0).fold(0.0, f64::max));
    assert_eq!(got.max_rss_mb, win.iter().map(|v| v.1).fold(0.0, f64::max));
    assert_eq!(got.max_wall_s, win.iter().map(|v| v.2).fold(0.0, f64::max));
    // The plan: the covering index, no sort, no table access.
    let plan: Vec<String> = s
        .conn()
        .prepare(
            "EXPLAIN QUERY PLAN SELECT actual_cpu_s, actual_rss_mb, actual_wall_s
             FROM resource_prediction INDEXED BY idx_resource_prediction_prior
             WHERE job_key = 'k' AND outcome = 'ok' AND actual_rss_mb IS NOT NULL
             ORDER BY id DESC LIMIT 1000",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join(" | ");
    assert!(
        plan.contains("COVERING INDEX idx_resource_prediction_prior"),
        "{plan}"
    );
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}

#[test]
fn training_rows_are_the_latest_dense_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("presize.db")).unwrap();
    for i in 0..10 {
        let outcome = if i == 3 { "failed" } else { "ok" };
        s.conn()
            .execute(
                "INSERT INTO resource_prediction (job_id, job_key, runtime, command,
                    features, schema_hash, model_version, host, predicted_at, settled_at,
                    outcome, actual_rss_mb)
                 VALUES ('j', 'k', 'python', '[]', ?1, 'h', 'm', 'h', 't', 't', ?2, 1)",
                params![format!(r#"{{"b": {i}, "x": 1, "a": 0.5}}"#), outcome],
            )
            .unwrap();
    }
    assert_eq!(s.count_training_rows().unwrap(), 9);
    let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let rows = s.training_rows(&names, 4).unwrap().rows;
    let got: Vec<_> = rows.iter().map(|r| r.features.clone()).collect();
    assert_eq!(
        got,
        vec![
            vec![0.5, 6.0, 0.0],
            vec![0.5, 7.0, 0.0],
            vec![0.5, 8.0, 0.0],
            vec![0.5, 9.0, 0.0]
        ]
    );
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.training_rows(&names, 100).unwrap().rows.len(), 9);
}

#[test]
fn not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.db");
    std::fs::write(&p, vec![0xAB; 8192]).unwrap();
    let e = Store::open(&p).unwrap_err().to_string();
    assert!(e.contains("x.db"), "{e}");
}

fn new_row(job_id: &str) -> NewPrediction {
    let b = crate::model::Bounds {
        peak_rss_mb: 100.0,
        wall_seconds: 10.0,
        cpu_seconds: 10.0,
    };
    let limits = crate::policy::Limits {
        memory_limit_mb: 200,
        timeout_s: 60,
        enforced: true,
    };
    NewPrediction {
        job_id: job_id.into(),
        analysis_id: None,
        job_key: "k".into(),
        runtime: "python".into(),
        script_path: None,
        script_sha256: None,
        command_json: "[]".into(),
        features_json: "{}".into(),
        schema_hash: "x".into(),
        prediction: crate::model::Prediction {
            cpu_seconds: 1.0,
            peak_rss_mb: 100.0,
            wall_seconds: 1.0,
            confidence: 0.5,
            upper: b,
            lower: b,
            model_version: "m".into(),
            source: crate::model::Source::Prior,
        },
        predicted: limits,
        applied: Some(limits),
        memory_source: None,
        timeout_source: None,
        memory_enforced: true,
        dry_run: false,
        backend: "local".into(),
        priority: "normal".into(),
        attempt: 1,
        host: "h".into(),
        executor_pid: 1,
        executor_start: None,
        rejected: false,
        sizing: Default::default(),
        size: Default::default(),
    }
}

fn writer_columns(s: &Store, id: i64) -> (Option<String>, Option<i64>, Option<String>) {
    s.conn()
        .query_row(
            "SELECT executor_boot_id, executor_pidns, executor_token FROM resource_prediction
             WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

static WRITER_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn test_writer() -> WriterIdentity {
    WRITER_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    WriterIdentity {
        boot_id: Some("boot".into()),
        pidns: Some(4026531836),
        token: Some("0badcafe".into()),
    }
}

#[test]
fn predictions_record_the_writer_given_computed_at_the_first_insert_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("presize.db");
    // A plain open records no writer (NULL, as rows of older versions).
    let mut plain = Store::open(&p).unwrap();
    let id = plain.insert_prediction(&new_row("a")).unwrap();
    assert_eq!(writer_columns(&plain, id), (None, None, None));
    drop(plain);
    let mut s = Store::open(&p).unwrap();
    s.set_writer(test_writer);
    assert_eq!(WRITER_CALLS.load(std::sync::atomic::Ordering::SeqCst), 0);
    let ids = [
        s.insert_prediction(&new_row("b")).unwrap(),
        s.insert_prediction(&new_row("c")).unwrap(),
    ];
    assert_eq!(WRITER_CALLS.load(std::sync::atomic::Ordering::SeqCst), 1);
    for id in ids {
        assert_eq!(
            writer_columns(&s, id),
            (
                Some("boot".into()),
                Some(4026531836),
                Some("0badcafe".into())
            )
        );
    }
}
