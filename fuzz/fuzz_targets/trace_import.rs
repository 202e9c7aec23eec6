//! Fuzz Nextflow trace import (`replay::read_trace_from`, CSV) and the replay protocol
//! (`protocol_series`, then a replay through presize's sizing engine, as `presize replay`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use presize::replay::{
    protocol_series, read_trace_from, replay_series, EngineMethod, Tally, MIN_ROWS_PER_PROCESS,
    ONLINE_FRACTION,
};
use presize::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = read_trace_from(data, Path::new("trace_fuzz.csv")) else {
        return;
    };
    // Rows are numbered by the `\n`-lines they start on (the header is line 1): never
    // backwards. A lone `\r` ends a CSV record without starting a line, so two rows may
    // share a line number, and a row may share the header's.
    let mut last_line = 1;
    for r in &trace.rows {
        assert!(r.line >= last_line, "line numbers never decrease");
        last_line = r.line;
        assert!(!r.process.is_empty() && r.process.trim() == r.process);
        for v in [
            r.cpus, r.memory, r.time, r.realtime, r.rss, r.peak_rss, r.rchar,
        ]
        .into_iter()
        .flatten()
        {
            assert!(v.is_finite(), "non-finite number imported");
        }
    }
    let series = protocol_series(&trace);
    let mut online_total = 0u64;
    for s in &series {
        let n = s.initial.len() + s.online.len();
        assert!(n >= MIN_ROWS_PER_PROCESS);
        assert_eq!(s.online.len(), (ONLINE_FRACTION * n as f64).ceil() as usize);
        for t in s.initial.iter().chain(&s.online) {
            assert!(t.y > 0.0 && t.y.is_finite(), "rss > 0");
            assert!(
                t.runtime_ms > 0.0 && t.runtime_ms.is_finite(),
                "realtime > 0"
            );
            assert!(t.x >= 0.0 && t.x.is_finite());
        }
        online_total += s.online.len() as u64;
    }
    // Replay: bounded work (a few hundred rows at most from a fuzz input).
    let mut method = EngineMethod::new(Policy::default());
    let mut tally = Tally::default();
    for s in &series {
        let t = replay_series(s, &mut method);
        assert_eq!(t.rows, s.online.len() as u64);
        assert!(t.wastage_gbh >= 0.0, "wastage {}", t.wastage_gbh);
        assert!(t.usage_gbh >= 0.0, "usage {}", t.usage_gbh);
        tally.add(&t);
    }
    assert_eq!(tally.rows, online_total);
    if tally.usage_gbh.is_finite() && tally.wastage_gbh.is_finite() {
        let maq = tally.maq();
        assert!((0.0..=1.0).contains(&maq), "maq {maq}");
    }
});
