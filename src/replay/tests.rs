//! Tests of the replay protocol and the engine method.
use super::*;
use std::io::Write;
use std::path::Path;

fn parse(text: &str) -> Result<Trace, ReplayError> {
    read_trace_from(text.as_bytes(), Path::new("t.csv"))
}

#[test]
fn header_only_file_has_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("trace_none.csv");
    std::fs::write(&p, "process,realtime,rss,rchar\n").unwrap_or_else(|e| panic!("{e}"));
    let r = replay_files(&[p], &Policy::default(), &mut |_, _| {});
    assert!(matches!(r, Err(ReplayError::Invalid { .. })));
}

/// Allocates 2 GB first, 4 GB on the first retry, 8 GB on the second…
struct Doubling;
impl Method for Doubling {
    fn reset(&mut self, _initial: &[Task]) {}
    fn first(&mut self, _task: &Task) -> f64 {
        2e9
    }
    fn retry(&mut self, _task: &Task, failed_at: f64, _attempt: u32) -> f64 {
        failed_at * 2.0
    }
    fn observe(&mut self, _task: &Task) {}
}

fn task(y_gb: f64, hours: f64) -> Task {
    Task {
        x: 1.0,
        y: y_gb * 1e9,
        runtime_ms: hours * 3.6e6,
        cpus: None,
        memory: None,
    }
}

#[test]
fn wastage_and_failures_are_accounted_like_the_protocol() {
    let s = ProcessSeries {
        process: "p".into(),
        initial: vec![],
        // 1 GB for 1 h under 2 GB: 1 GB·h.
        // 3 GB for 1 h: fails at 2 (2 GB·h), then 4: +1 → 3 GB·h, 1 failure.
        // 5 GB for 2 h: fails at 2 (4) and 4 (8), then 8: +6 → 18 GB·h, 2 failures.
        online: vec![task(1.0, 1.0), task(3.0, 1.0), task(5.0, 2.0)],
    };
    let t = replay_series(&s, &mut Doubling);
    assert!((t.wastage_gbh - 22.0).abs() < 1e-9, "{}", t.wastage_gbh);
    assert_eq!(t.failures, 3);
    assert!((t.usage_gbh - 14.0).abs() < 1e-9);
    assert!((t.maq() - 14.0 / 36.0).abs() < 1e-12);
    assert_eq!(t.rows, 3);
}

#[test]
fn a_method_that_does_not_grow_still_terminates() {
    struct Stuck;
    impl Method for Stuck {
        fn reset(&mut self, _: &[Task]) {}
        fn first(&mut self, _: &Task) -> f64 {
            f64::NAN
        }
        fn retry(&mut self, _: &Task, _: f64, _: u32) -> f64 {
            1.0
        }
        fn observe(&mut self, _: &Task) {}
    }
    let s = ProcessSeries {
        process: "p".into(),
        initial: vec![],
        online: vec![task(3.0, 1.0)],
    };
    let t = replay_series(&s, &mut Stuck);
    assert!(t.wastage_gbh.is_finite() && t.failures > 0);
}

fn synthetic_trace(rows: &[(&str, f64, f64, f64)]) -> String {
    let mut s = String::from("process,status,cpus,memory,realtime,rss,peak_rss,rchar\n");
    for (p, realtime, rss, rchar) in rows {
        s.push_str(&format!(
            "\"{p}\",COMPLETED,1,1000,{realtime},{rss},{rss},{rchar}\n"
        ));
    }
    s
}

#[test]
fn protocol_filters_processes_like_the_published_code() {
    let mut rows = Vec::new();
    for i in 0..40 {
        rows.push(("keep", 1000.0, 1e9 + i as f64, 1e6 * i as f64));
        // rss 0 rows are dropped before counting: 30 left → skipped.
        rows.push(("few", 1000.0, if i < 30 { 1e9 } else { 0.0 }, 1.0));
        // one realtime of 0 → skipped.
        rows.push(("zero", if i == 5 { 0.0 } else { 1000.0 }, 1e9, 1.0));
    }
    rows.push(("keep", 1000.0, 0.0, 1.0)); // dropped (rss 0)
    let trace = parse(&synthetic_trace(&rows)).unwrap_or_else(|e| panic!("{e}"));
    let series = protocol_series(&trace);
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].process, "keep");
    assert_eq!(series[0].online.len(), 28);
    assert_eq!(series[0].initial.len(), 12);
    // The split is sklearn's: permutation(40)[..28] are the online rows, in order.
    let perm = permutation(40, SPLIT_SEED);
    assert_eq!(series[0].online[0].y, 1e9 + perm[0] as f64);
    assert_eq!(series[0].initial[0].y, 1e9 + perm[28] as f64);
}

#[test]
fn replay_files_reports_each_workflow() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("trace_toy.csv");
    let rows: Vec<(&str, f64, f64, f64)> = (0..50)
        .map(|i| {
            (
                "align",
                3.6e6,
                1e9 * (1.0 + (i % 7) as f64 / 10.0),
                1e9 * i as f64,
            )
        })
        .collect();
    let mut f = std::fs::File::create(&p).unwrap_or_else(|e| panic!("{e}"));
    f.write_all(synthetic_trace(&rows).as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut calls = Vec::new();
    let report = replay_files(std::slice::from_ref(&p), &Policy::default(), &mut |d, n| {
        calls.push((d, n))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(calls, vec![(1, 1)]);
    let w = &report.workflows[0];
    assert_eq!(w.name, "toy");
    assert_eq!((w.processes_used, w.rows_used, w.rows_online), (1, 50, 35));
    assert!(w.wastage_gbh.is_finite() && w.wastage_gbh >= 0.0);
    assert!(w.maq > 0.0 && w.maq <= 1.0);
    assert!(report.config.get("failure_cost").is_some());
    let json = serde_json::to_string(&report).unwrap_or_default();
    assert!(json.contains("\"wastage_gbh\""));

    // The Tovar baseline on the same trace runs through the same harness.
    let tovar = replay_files_with(
        &[p],
        &mut TovarMethod::default(),
        &Policy::default(),
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tovar.workflows[0].rows_online, 35);
}
