//! `presize replay --store`: the host's own settled history replayed through the sizing
//! engine, under the configured policy and alternatives — the A/B test an operator runs
//! before changing policy, and what `retrain` uses to promote a model by what it would
//! have cost.
//!
//! Jobs are replayed in the order they were recorded. Each job gets the engine's first
//! limits from what was known then (its recorded prediction and evidence, its key's window
//! of the successful runs before it), then attempts are simulated against what the job
//! really needed (the peak and wall time of its successful attempt): a cap below the peak
//! is an OOM kill, a timeout below the wall time a timeout kill, and the engine's retry rule
//! gives the next limits, up to `max_attempts`. Jobs that never succeeded (their need is
//! unknown) and rejected jobs are left out and counted.
//!
//! Bounded: at most `max_jobs` of the newest jobs are read (one pass, rows held as small
//! structs), and the engine's work per job is bounded by its window.

use serde::Serialize;

use crate::job::Outcome;
use crate::model::{Bounds, Prediction, Source};
use crate::policy::{
    Decision, Evidence, Evidences, JobSize, KeyHistory, KeyRun, LimitMode, Policy, Sizer,
};
use crate::store::{Store, StoreError};

/// One job of the history, as the replay needs it.
#[derive(Debug, Clone)]
pub struct HistJob {
    pub first_row: i64,
    pub job_key: String,
    pub prediction: Prediction,
    pub evidence: Option<Evidence>,
    pub size: JobSize,
    /// What the job needed: the peak and wall time of its successful attempt.
    pub peak_mb: f64,
    pub wall_s: f64,
    /// What the rows recorded for the first attempt (cap, limit source).
    pub recorded_first_cap: Option<u64>,
    pub recorded_memory_source: Option<String>,
    pub recorded_timeout_source: Option<String>,
}

/// Totals for one policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyTally {
    pub policy: String,
    pub jobs: u64,
    /// Σ cap × duration over every simulated attempt, GB·h.
    pub reserved_gbh: f64,
    /// Σ peak × wall of the successful attempts, GB·h.
    pub used_gbh: f64,
    /// reserved − used, GB·h.
    pub wastage_gbh: f64,
    pub first_attempt_oom_kills: u64,
    pub first_attempt_timeout_kills: u64,
    /// Jobs that still failed after `max_attempts`.
    pub final_failures: u64,
    /// Wall time of killed attempts, hours.
    pub hours_lost_to_kills: f64,
    /// Failed attempts × `failure_penalty_gbh` + wastage: what `retrain` compares.
    pub cost_gbh: f64,
    /// For the configured policy: jobs whose simulated first cap equals the recorded one
    /// (limits set by the engine, not overrides or dry runs), of those comparable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_caps_matching_rows: Option<(u64, u64)>,
}

/// What `replay --store` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreReplay {
    pub jobs_replayed: u64,
    pub jobs_left_out: u64,
    pub failure_penalty_gbh: f64,
    pub policies: Vec<PolicyTally>,
}

/// GB·h charged per failed attempt on top of the memory it held: a typical job's footprint
/// for an hour (the job is re-run, its user waits).
pub const FAILURE_PENALTY_GBH: f64 = 0.1;

fn gbh(mb: f64, s: f64) -> f64 {
    mb * 1_048_576.0 / 1e9 * s / 3600.0
}

/// Read the newest `max_jobs` jobs that succeeded, oldest first.
pub fn read_jobs(store: &Store, max_jobs: usize) -> Result<(Vec<HistJob>, u64), StoreError> {
    let conn = store.conn();
    let q = |e: rusqlite::Error| StoreError::Query {
        what: "reading the history to replay",
        source: e,
    };
    let mut stmt = conn
        .prepare(
            "SELECT job_id, min(id), job_key,
                    max(CASE WHEN outcome = 'ok' THEN actual_rss_mb END),
                    max(CASE WHEN outcome = 'ok' THEN actual_wall_s END),
                    count(CASE WHEN outcome = 'ok' THEN 1 END)
             FROM resource_prediction
             WHERE id > (SELECT coalesce(max(id), 0) FROM resource_prediction) - ?1 * 4
               AND settled_at IS NOT NULL
             GROUP BY job_id ORDER BY min(id) DESC LIMIT ?1",
        )
        .map_err(q)?;
    struct Head {
        first: i64,
        key: String,
        peak: Option<f64>,
        wall: Option<f64>,
        ok: i64,
    }
    let heads: Vec<Head> = stmt
        .query_map([max_jobs.min(i64::MAX as usize / 8) as i64], |r| {
            Ok(Head {
                first: r.get(1)?,
                key: r.get(2)?,
                peak: r.get(3)?,
                wall: r.get(4)?,
                ok: r.get(5)?,
            })
        })
        .map_err(q)?
        .collect::<Result<_, _>>()
        .map_err(q)?;
    let mut first = conn
        .prepare_cached(
            "SELECT predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb,
                    upper_wall_s, lower_rss_mb, confidence, source, model_version, evidence,
                    size_input_mb, size_arg_log10, applied_memory_mb, memory_source,
                    timeout_source, outcome
             FROM resource_prediction WHERE id = ?1",
        )
        .map_err(q)?;
    let mut jobs = Vec::new();
    let mut left_out = 0u64;
    for h in heads.into_iter().rev() {
        let (Some(peak), Some(wall)) = (h.peak, h.wall) else {
            left_out += 1;
            continue;
        };
        if h.ok == 0 || !(peak.is_finite() && peak > 0.0 && wall.is_finite() && wall >= 0.0) {
            left_out += 1;
            continue;
        }
        let job = first
            .query_row([h.first], |r| {
                let f = |i: usize| -> rusqlite::Result<f64> {
                    Ok(r.get::<_, Option<f64>>(i)?.unwrap_or(0.0))
                };
                let source: Option<String> = r.get(8)?;
                Ok(HistJob {
                    first_row: h.first,
                    job_key: h.key.clone(),
                    prediction: Prediction {
                        cpu_seconds: f(0)?,
                        peak_rss_mb: f(1)?,
                        wall_seconds: f(2)?,
                        confidence: f(7)?,
                        upper: Bounds {
                            cpu_seconds: f(3)?,
                            peak_rss_mb: f(4)?,
                            wall_seconds: f(5)?,
                        },
                        lower: Bounds {
                            cpu_seconds: 0.0,
                            peak_rss_mb: f(6)?,
                            wall_seconds: 0.0,
                        },
                        model_version: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
                        source: if source.as_deref() == Some("model") {
                            Source::Model
                        } else {
                            Source::Prior
                        },
                    }
                    .sanitized(),
                    evidence: r
                        .get::<_, Option<String>>(10)?
                        .as_deref()
                        .and_then(Evidence::parse),
                    size: JobSize::from_columns(r.get(11)?, r.get(12)?),
                    peak_mb: peak,
                    wall_s: wall,
                    recorded_first_cap: r.get::<_, Option<i64>>(13)?.map(|c| c.max(0) as u64),
                    recorded_memory_source: r.get(14)?,
                    recorded_timeout_source: r.get(15)?,
                })
            })
            .map_err(q)?;
        jobs.push(job);
    }
    Ok((jobs, left_out))
}

/// Replay `jobs` under one policy. `predict` may replace each job's recorded prediction
/// (retrain's comparison of two models); `None` keeps what was recorded.
pub fn replay_policy(
    jobs: &[HistJob],
    name: &str,
    policy: &Policy,
    budget_mb: u64,
    predict: Option<&dyn Fn(&HistJob) -> Prediction>,
    compare_with_rows: bool,
    count_from_row: i64,
) -> PolicyTally {
    let sizer = Sizer::new(policy, budget_mb);
    let mut keys: std::collections::HashMap<&str, KeyHistory> = Default::default();
    let mut t = PolicyTally {
        policy: name.to_string(),
        ..PolicyTally::default()
    };
    let (mut matched, mut comparable) = (0u64, 0u64);
    for j in jobs {
        let key = keys.entry(j.job_key.as_str()).or_default();
        if j.first_row < count_from_row {
            // Before the counted part: only learned, as the store's window would have.
            key.observe(
                &KeyRun {
                    input_mb: j.size.input_mb,
                    arg: j.size.arg,
                    peak_mb: j.peak_mb,
                    wall_s: j.wall_s,
                },
                &sizer.alloc,
            );
            continue;
        }
        let prediction = match predict {
            Some(p) => p(j),
            None => j.prediction.clone(),
        };
        // What the recorded evidence says the model knew (its novelty is not stored).
        let novelty: Vec<String> = match j.evidence {
            Some(Evidence::Model) | Some(Evidence::History) | None => Vec::new(),
            Some(Evidence::Novel) => vec!["recorded as novel".into()],
        };
        let ev = Evidences {
            prediction: &prediction,
            novelty: &novelty,
            key,
            size: j.size,
            model_fallback: None,
        };
        t.jobs += 1;
        let (mut limits, sizing) = match sizer.first_limits(&ev, false) {
            Decision::Run {
                applied, sizing, ..
            } => (applied, sizing),
            Decision::Reject(_) => {
                t.final_failures += 1;
                continue;
            }
        };
        if compare_with_rows {
            let engine_set = matches!(
                j.recorded_memory_source.as_deref(),
                Some("predicted") | Some("static")
            );
            if let (true, Some(rec)) = (engine_set, j.recorded_first_cap) {
                comparable += 1;
                matched += (rec == limits.memory_limit_mb) as u64;
            }
        }
        let mut attempt = 1u32;
        loop {
            let cap = limits.memory_limit_mb as f64;
            let oom = j.peak_mb > cap;
            let timed_out = !oom && j.wall_s > limits.timeout_s as f64;
            let dur = if timed_out {
                limits.timeout_s as f64
            } else {
                j.wall_s
            };
            t.reserved_gbh += gbh(cap, dur);
            if !oom && !timed_out {
                t.used_gbh += gbh(j.peak_mb, j.wall_s);
                break;
            }
            t.hours_lost_to_kills += dur / 3600.0;
            t.cost_gbh += FAILURE_PENALTY_GBH;
            if attempt == 1 {
                t.first_attempt_oom_kills += oom as u64;
                t.first_attempt_timeout_kills += timed_out as u64;
            }
            let cause = if oom {
                Outcome::OomKilled
            } else {
                Outcome::TimedOut
            };
            let next = if attempt < policy.max_attempts {
                sizer.retry_limits(&ev, limits, &sizing, cause, attempt)
            } else {
                None
            };
            match next {
                Some(l) => {
                    limits = l;
                    attempt += 1;
                }
                None => {
                    t.final_failures += 1;
                    break;
                }
            }
        }
        key.observe(
            &KeyRun {
                input_mb: j.size.input_mb,
                arg: j.size.arg,
                peak_mb: j.peak_mb,
                wall_s: j.wall_s,
            },
            &sizer.alloc,
        );
    }
    t.wastage_gbh = (t.reserved_gbh - t.used_gbh).max(0.0);
    t.cost_gbh += t.wastage_gbh;
    if compare_with_rows {
        t.first_caps_matching_rows = Some((matched, comparable));
    }
    t
}

/// Replay the store's history under the configured policy and, unless `only` names one,
/// under each other limit mode.
pub fn replay_store(
    store: &Store,
    policy: &Policy,
    budget_mb: u64,
    only: Option<LimitMode>,
    max_jobs: usize,
) -> Result<StoreReplay, StoreError> {
    let (jobs, left_out) = read_jobs(store, max_jobs)?;
    let mut out = StoreReplay {
        jobs_replayed: jobs.len() as u64,
        jobs_left_out: left_out,
        failure_penalty_gbh: FAILURE_PENALTY_GBH,
        policies: Vec::new(),
    };
    let modes: Vec<LimitMode> = match only {
        Some(m) => vec![m],
        None => {
            let mut v = vec![policy.limit_mode];
            for m in [LimitMode::CostAware, LimitMode::Headroom, LimitMode::Upper] {
                if m != policy.limit_mode {
                    v.push(m);
                }
            }
            v
        }
    };
    for (i, m) in modes.into_iter().enumerate() {
        let p = Policy {
            limit_mode: m,
            ..policy.clone()
        };
        let configured = m == policy.limit_mode;
        let name = if configured && i == 0 {
            format!("{} (configured)", m.as_str())
        } else {
            m.as_str().to_string()
        };
        out.policies.push(replay_policy(
            &jobs, &name, &p, budget_mb, None, configured, 0,
        ));
    }
    Ok(out)
}
