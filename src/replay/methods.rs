//! Reference allocation methods for the replay harness (presize's own engine is
//! [`super::EngineMethod`]).

use super::{Method, Task};

/// Tovar et al.'s first allocation (minimum expected waste over the peaks seen, runtime
/// weighted; retry at the largest peak seen, then at a 128 GB node) — the reference
/// baseline, kept to check that the harness reproduces the published numbers.
#[derive(Debug, Clone, Default)]
pub struct TovarMethod {
    seen: Vec<(f64, f64)>,
}

impl Method for TovarMethod {
    fn reset(&mut self, initial: &[Task]) {
        self.seen = initial.iter().map(|t| (t.y, t.runtime_ms)).collect();
    }
    fn first(&mut self, _task: &Task) -> f64 {
        // Group equal peaks, sort descending, E(a_i) = a_i·T + a_max·T(> a_i).
        let mut by_value: Vec<(f64, f64)> = Vec::new();
        let mut sorted = self.seen.clone();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (v, t) in sorted {
            match by_value.last_mut() {
                Some(last) if last.0 == v => last.1 += t,
                _ => by_value.push((v, t)),
            }
        }
        let Some(&(am, _)) = by_value.first() else {
            return 0.0;
        };
        let count = self.seen.len() as f64;
        let total: f64 = by_value.iter().map(|p| p.1 / count).sum();
        let mut best = am;
        let mut best_e = am * total;
        let mut above = 0.0;
        for (i, &(ai, _)) in by_value.iter().enumerate() {
            if i > 0 {
                above += by_value[i - 1].1 / count;
            }
            let e = ai * total + am * above;
            if e < best_e {
                best_e = e;
                best = ai;
            }
        }
        best
    }
    fn retry(&mut self, _task: &Task, failed_at: f64, _attempt: u32) -> f64 {
        let max = self.seen.iter().map(|p| p.0).fold(0.0, f64::max);
        if failed_at < max {
            max
        } else {
            128e9
        }
    }
    fn observe(&mut self, task: &Task) {
        self.seen.push((task.y, task.runtime_ms));
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::replay::{read_trace, replay_trace};

    /// The nf-core traces: the repository copy (`tests/data/nfcore-traces`) or the
    /// shared data next to the checkout; the test is skipped when neither is there.
    fn nfcore_trace(name: &str) -> Option<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        [
            root.join("tests/data/nfcore-traces"),
            root.join("../shared/data/nfcore-traces"),
        ]
        .into_iter()
        .map(|d| d.join(format!("trace_{name}.csv")))
        .find(|p| p.is_file())
    }

    #[test]
    fn harness_reproduces_the_published_tovar_numbers() {
        // data README: Tovar eager 624.1 / 39, methylseq 4080.6 / 58, rnaseq 195.3 / 55.
        for (name, wastage, failures) in [
            ("eager", 624.1, 39),
            ("methylseq", 4080.6, 58),
            ("rnaseq", 195.3, 55),
        ] {
            let Some(p) = nfcore_trace(name) else {
                eprintln!("skipped: trace_{name}.csv not found");
                continue;
            };
            let trace = read_trace(&p).unwrap_or_else(|e| panic!("{e}"));
            let r = replay_trace(&trace, &mut TovarMethod::default());
            assert!(
                (r.wastage_gbh - wastage).abs() < 0.05,
                "{name}: {}",
                r.wastage_gbh
            );
            assert_eq!(r.failures, failures, "{name}");
        }
    }
}
