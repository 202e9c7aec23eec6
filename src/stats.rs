//! Accuracy and impact metrics shared by `retrain`, `stats` and `report`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::JobRecord;

pub use crate::model::conformal::{mape, median_ape, r2};

/// Accuracy for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetAccuracy {
    pub target: &'static str,
    pub n: usize,
    pub r2: Option<f64>,
    pub mape: Option<f64>,
    pub median_ape: Option<f64>,
}

/// Metrics over a set of jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub jobs: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub targets: Vec<TargetAccuracy>,
    /// Share of measured jobs whose actual peak stayed within the predicted memory limit.
    pub cap_coverage: Option<f64>,
}

/// A summary per group (model version, runtime, job key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The `stats` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub window: usize,
    #[serde(flatten)]
    pub overall: Summary,
    pub by_model_version: Vec<Group>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
}

/// Grouping for `stats --by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    Runtime,
    JobKey,
}

fn accuracy(
    rows: &[&JobRecord],
    target: &'static str,
    f: impl Fn(&JobRecord) -> (Option<f64>, Option<f64>),
) -> TargetAccuracy {
    let (mut a, mut p) = (Vec::new(), Vec::new());
    for r in rows {
        if r.outcome.as_deref() != Some("ok") {
            continue;
        }
        if let (Some(x), Some(y)) = f(r) {
            if x.is_finite() && y.is_finite() {
                a.push(x);
                p.push(y);
            }
        }
    }
    TargetAccuracy {
        target,
        n: a.len(),
        r2: r2(&a, &p),
        mape: mape(&a, &p),
        median_ape: median_ape(&a, &p),
    }
}

/// Summarise a set of settled jobs.
pub fn summarise(rows: &[&JobRecord]) -> Summary {
    let mut outcomes = BTreeMap::new();
    for r in rows {
        *outcomes
            .entry(r.outcome.clone().unwrap_or_else(|| "unsettled".into()))
            .or_insert(0) += 1;
    }
    let targets = vec![
        accuracy(rows, "peak_rss_mb", |r| {
            (r.actual_rss_mb, r.predicted_rss_mb)
        }),
        accuracy(rows, "wall_seconds", |r| {
            (r.actual_wall_s, r.predicted_wall_s)
        }),
        accuracy(rows, "cpu_seconds", |r| (r.actual_cpu_s, r.predicted_cpu_s)),
    ];
    let (mut covered, mut measured) = (0usize, 0usize);
    for r in rows {
        match (r.outcome.as_deref(), r.actual_rss_mb, r.memory_limit_mb) {
            (Some("oom_killed"), _, Some(_)) => measured += 1,
            (Some("ok" | "failed"), Some(peak), Some(cap)) => {
                measured += 1;
                if peak <= cap as f64 {
                    covered += 1;
                }
            }
            _ => {}
        }
    }
    Summary {
        jobs: rows.len(),
        outcomes,
        targets,
        cap_coverage: (measured > 0).then(|| covered as f64 / measured as f64),
    }
}

fn grouped(rows: &[JobRecord], key: impl Fn(&JobRecord) -> String) -> Vec<Group> {
    let mut map: BTreeMap<String, Vec<&JobRecord>> = BTreeMap::new();
    for r in rows {
        map.entry(key(r)).or_default().push(r);
    }
    map.into_iter()
        .map(|(key, rs)| Group {
            key,
            summary: summarise(&rs),
        })
        .collect()
}

/// Compute the `stats` report over settled rows.
pub fn compute(rows: &[JobRecord], window: usize, by: Option<GroupBy>) -> StatsReport {
    let all: Vec<&JobRecord> = rows.iter().collect();
    StatsReport {
        window,
        overall: summarise(&all),
        by_model_version: grouped(rows, |r| r.model_version.clone()),
        by: by.map(|b| match b {
            GroupBy::Runtime => "runtime".into(),
            GroupBy::JobKey => "job-key".into(),
        }),
        groups: match by {
            None => Vec::new(),
            Some(GroupBy::Runtime) => grouped(rows, |r| r.runtime.clone()),
            Some(GroupBy::JobKey) => grouped(rows, |r| r.job_key.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_known_answers() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let p = [1.0, 2.0, 3.0, 5.0];
        // SS_res = 1, SS_tot = 5 → 0.8
        assert!((r2(&a, &p).unwrap() - 0.8).abs() < 1e-12);
        // APEs 0,0,0,0.25 → mean 0.0625, median 0
        assert!((mape(&a, &p).unwrap() - 0.0625).abs() < 1e-12);
        assert_eq!(median_ape(&a, &p), Some(0.0));
        assert_eq!(mape(&[0.0], &[1.0]), None);
    }
}
