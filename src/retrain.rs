//! `retrain`: train a candidate on settled rows, compare it with the current model on a
//! time-ordered holdout (the latest 20 %), promote only if it is not worse.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::error::Error;
use crate::features::{FeatureVector, Schema};
use crate::model::conformal::{mape, median_ape, pinball_loss};
use crate::model::trained::{TrainConfig, TrainProgress, TrainedModel, TrainingRow, TARGETS};
use crate::model::{save_model, Prediction, Predictor};

/// Relative tolerance of "not worse" (2 %: holdout noise must not block a promotion).
pub const NOT_WORSE_TOLERANCE: f64 = 0.02;
/// Share of the latest rows held out for the comparison.
pub const HOLDOUT_FRACTION: f64 = 0.2;

/// Options of `retrain`.
#[derive(Debug, Clone)]
pub struct RetrainOptions {
    pub min_rows: usize,
    pub force: bool,
}

impl Default for RetrainOptions {
    fn default() -> Self {
        Self {
            min_rows: 100,
            force: false,
        }
    }
}

/// Holdout metrics of one model for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetEval {
    pub target: &'static str,
    pub n: usize,
    pub mape: Option<f64>,
    pub median_ape: Option<f64>,
    /// Pinball loss of the upper bound at the target coverage (lower is better).
    pub pinball: Option<f64>,
    /// Share of holdout actuals at or below the upper bound.
    pub coverage: Option<f64>,
}

/// Holdout metrics of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEval {
    pub version: String,
    pub targets: Vec<TargetEval>,
}

/// The `retrain` report.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainReport {
    /// `promoted`, `kept` (candidate worse) or `not_enough_rows`.
    pub status: &'static str,
    pub message: String,
    /// Usable settled rows in the store.
    pub settled_rows: usize,
    /// Of those, the latest rows read (at most `[model] max_train_rows`): split into the
    /// training and holdout rows below.
    pub used_rows: usize,
    /// Usable rows left out because their stored features could not be read (the message
    /// names the first).
    pub unreadable_rows: usize,
    pub min_rows: usize,
    pub train_rows: usize,
    pub holdout_rows: usize,
    pub candidate: Option<ModelEval>,
    pub current: Option<ModelEval>,
    pub promoted: bool,
    pub model_path: Option<String>,
    /// The holdout's jobs replayed through the sizing engine (first limits + retries)
    /// under each model: what promotion is decided by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedCost>,
}

/// What each model would have cost on the holdout, through the whole sizing engine.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatedCost {
    pub candidate: crate::replay::store::PolicyTally,
    pub current: crate::replay::store::PolicyTally,
}

fn actual(r: &TrainingRow, t: usize) -> Option<f64> {
    // Only complete observations are scored.
    if r.outcome != crate::job::Outcome::Ok {
        return None;
    }
    r.target(t).filter(|v| *v > 0.0)
}

fn pick(p: &Prediction, t: usize) -> (f64, f64) {
    match t {
        0 => (p.cpu_seconds, p.upper.cpu_seconds),
        1 => (p.peak_rss_mb, p.upper.peak_rss_mb),
        _ => (p.wall_seconds, p.upper.wall_seconds),
    }
}

/// Score a predictor on holdout rows (features in `schema` order).
pub fn evaluate(
    predictor: &Predictor,
    rows: &[TrainingRow],
    schema: &Arc<Schema>,
    coverage: f64,
) -> ModelEval {
    let preds: Vec<Prediction> = rows
        .iter()
        .map(|r| {
            predictor.predict(&FeatureVector {
                schema: schema.clone(),
                values: r.features.clone(),
            })
        })
        .collect();
    let targets = TARGETS
        .iter()
        .enumerate()
        .map(|(t, name)| {
            let (mut a, mut p, mut u) = (Vec::new(), Vec::new(), Vec::new());
            for (r, pr) in rows.iter().zip(&preds) {
                if let Some(y) = actual(r, t) {
                    let (point, up) = pick(pr, t);
                    a.push(y);
                    p.push(point);
                    u.push(up);
                }
            }
            let covered = a.iter().zip(&u).filter(|(y, up)| y <= up).count();
            TargetEval {
                target: name,
                n: a.len(),
                mape: mape(&a, &p),
                median_ape: median_ape(&a, &p),
                pinball: (!a.is_empty()).then(|| pinball_loss(&a, &u, coverage)),
                coverage: (!a.is_empty()).then(|| covered as f64 / a.len() as f64),
            }
        })
        .collect();
    ModelEval {
        version: predictor.version(),
        targets,
    }
}

/// True when `cand` is not worse than `cur` on every target (MAPE and pinball).
pub fn not_worse(cand: &ModelEval, cur: &ModelEval) -> bool {
    cand.targets.iter().zip(&cur.targets).all(|(c, o)| {
        let ok = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                a <= b * (1.0 + NOT_WORSE_TOLERANCE) + 1e-12
            }
            (None, _) => false,
            _ => true,
        };
        c.n == 0 || (ok(c.mape, o.mape) && ok(c.pinball, o.pinball))
    })
}

fn new_version(rows: usize) -> String {
    let now = crate::util::now_rfc3339();
    let compact: String = now
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let mut h = Sha256::new();
    h.update(now.as_bytes());
    h.update(rows.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let d = h.finalize();
    format!("gbt-{compact}Z-{:02x}{:02x}", d[0], d[1])
}

/// Where `retrain` is, for a progress display: `done` of `total` steps finished, `what`
/// runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    pub done: usize,
    pub total: usize,
    pub what: &'a str,
}

/// Steps of a retrain that trains: one per target, then evaluating the candidate and the
/// current model, then saving.
pub const STEPS: usize = TARGETS.len() + 3;

/// Train, compare, maybe promote.
pub fn retrain(
    settings: &Settings,
    opts: &RetrainOptions,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<RetrainReport, Error> {
    let mut store = settings.open_store()?;
    let (catalog, _) = crate::runner::catalog_and_options(settings);
    let schema = Arc::new(Schema::for_catalog(&catalog));
    let settled = store.count_training_rows()?;
    let read = store.training_rows(&schema.names, settings.file.model.max_train_rows)?;
    let (rows, unreadable) = (read.rows, read.unreadable);
    // Appended to the message: rows whose stored features could not be read.
    let left_out = unreadable
        .message("left out")
        .map(|m| format!("; {m}"))
        .unwrap_or_default();
    let mut report = RetrainReport {
        status: "not_enough_rows",
        message: String::new(),
        settled_rows: settled,
        used_rows: rows.len(),
        unreadable_rows: unreadable.count,
        min_rows: opts.min_rows,
        train_rows: 0,
        holdout_rows: 0,
        candidate: None,
        current: None,
        promoted: false,
        model_path: None,
        simulated: None,
    };
    let min_rows = opts.min_rows.max(20);
    if rows.len() < min_rows {
        report.message = format!(
            "not enough settled rows: {} < {min_rows}; keeping the current model{left_out}",
            rows.len()
        );
        return Ok(report);
    }
    let n_hold = ((rows.len() as f64) * HOLDOUT_FRACTION).ceil() as usize;
    let (train, holdout) = rows.split_at(rows.len() - n_hold);
    report.train_rows = train.len();
    report.holdout_rows = holdout.len();
    let cfg = TrainConfig {
        coverage: settings.file.model.coverage,
        ..TrainConfig::default()
    };
    // `done` = steps finished; each step is shown as it starts, trees within a target step.
    let mut done = 0;
    let mut show = |done: usize, what: &str| {
        progress(Step {
            done: done.min(STEPS),
            total: STEPS,
            what,
        })
    };
    let mut candidate = TrainedModel::train(
        train,
        &schema,
        &cfg,
        new_version(rows.len()),
        &mut |p| match p {
            TrainProgress::Target(name) => {
                show(done, &format!("training {name}"));
                done += 1;
            }
            TrainProgress::Tree {
                target,
                done: d,
                total,
            } => show(
                done.saturating_sub(1),
                &format!("training {target}: tree {d}/{total}"),
            ),
        },
    )?;
    if let (Some(d), Some(last)) = (candidate.domain.as_mut(), train.last()) {
        let keys = store.job_keys_through(last.id)?;
        d.set_keys(keys.iter().map(String::as_str));
    }
    show(done, "evaluating the candidate on the holdout");
    done += 1;
    let cand_eval = evaluate(
        &Predictor::with_model(candidate.clone()),
        holdout,
        &schema,
        cfg.coverage,
    );
    show(done, "evaluating the current model on the holdout");
    done += 1;
    let (current, _warnings) = Predictor::load(&settings.model_dir);
    let cur_eval = evaluate(&current, holdout, &schema, cfg.coverage);
    let has_current = current.trained().is_some();
    // Promotion by what each model would have cost: the holdout's jobs replayed through
    // the engine (the key windows learn the training part first), each model predicting
    // from the recorded features.
    let simulated = match holdout.first() {
        Some(first) => {
            let (jobs, _) = crate::replay::store::read_jobs(&store, rows.len())?;
            let by_id: std::collections::HashMap<i64, &TrainingRow> =
                rows.iter().map(|r| (r.id, r)).collect();
            let cand_predictor = Predictor::with_model(candidate.clone());
            let sim = |p: &Predictor| {
                let predict = |j: &crate::replay::store::HistJob| match by_id.get(&j.first_row) {
                    Some(r) => p.predict(&FeatureVector {
                        schema: schema.clone(),
                        values: r.features.clone(),
                    }),
                    None => j.prediction.clone(),
                };
                crate::replay::store::replay_policy(
                    &jobs,
                    &p.version(),
                    settings.policy(),
                    settings.host_budget_mb,
                    Some(&predict),
                    false,
                    first.id,
                )
            };
            let c = sim(&cand_predictor);
            let o = sim(&current);
            (c.jobs > 0).then_some(SimulatedCost {
                candidate: c,
                current: o,
            })
        }
        None => None,
    };
    // The cheaper model wins; within the tolerance (e.g. every holdout job sized by its
    // key's own history, so neither model changed a limit) the holdout metrics decide.
    let better = match &simulated {
        Some(s) if s.candidate.cost_gbh < s.current.cost_gbh * (1.0 - NOT_WORSE_TOLERANCE) => true,
        Some(s) if s.candidate.cost_gbh > s.current.cost_gbh * (1.0 + NOT_WORSE_TOLERANCE) => false,
        _ => not_worse(&cand_eval, &cur_eval),
    };
    let promote = opts.force || !has_current || better;
    report.status = if promote { "promoted" } else { "kept" };
    report.message = if opts.force {
        "promoted (--force)".into()
    } else if !has_current {
        "promoted: there was no trained model".into()
    } else if better {
        match &simulated {
            Some(s) if s.candidate.cost_gbh < s.current.cost_gbh * (1.0 - NOT_WORSE_TOLERANCE) => format!(
                "promoted: replayed through the sizing engine the holdout costs {:.3} GB·h under it vs {:.3} under {}",
                s.candidate.cost_gbh, s.current.cost_gbh, cur_eval.version
            ),
            _ => format!(
                "promoted: as cheap as {} through the sizing engine and not worse on the holdout metrics",
                cur_eval.version
            ),
        }
    } else {
        match &simulated {
            Some(s) if s.candidate.cost_gbh > s.current.cost_gbh * (1.0 + NOT_WORSE_TOLERANCE) => format!(
                "kept {}: replayed through the sizing engine the holdout costs {:.3} GB·h under the candidate vs {:.3}",
                cur_eval.version, s.candidate.cost_gbh, s.current.cost_gbh
            ),
            _ => format!(
                "kept {}: as cheap through the sizing engine, and the candidate is worse on the holdout metrics",
                cur_eval.version
            ),
        }
    };
    report.simulated = simulated;
    candidate.metrics = serde_json::json!({
        "holdout_rows": holdout.len(),
        "candidate": cand_eval,
        "current": cur_eval,
    });
    show(done, "saving the model");
    let path = save_model(&settings.model_dir, &candidate, promote)?;
    store.register_model(&crate::store::ModelRecord {
        version: &candidate.version,
        path: &path,
        trained_at: &candidate.trained_at,
        rows: candidate.rows,
        schema_hash: &candidate.schema.hash,
        metrics_json: &candidate.metrics.to_string(),
        promoted: promote,
    })?;
    report.promoted = promote;
    report.model_path = Some(path.display().to_string());
    report.candidate = Some(cand_eval);
    report.current = Some(cur_eval);
    progress(Step {
        done: STEPS,
        total: STEPS,
        what: "done",
    });
    report.message += &left_out;
    Ok(report)
}
