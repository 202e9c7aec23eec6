//! The trained model: one gradient-boosted tree model per target (CPU seconds, peak RSS,
//! wall seconds), trained in log space on the residuals over a monotone input-size
//! baseline, with split-conformal bounds per runtime (global where a runtime has too few
//! calibration rows).
//!
//! * **Log space**: targets span orders of magnitude; errors are relative.
//! * **Baseline**: `ln y ≈ a + b·ln(1 + input MB)` with `b ∈ [0, 1.5]` (more input never
//!   predicts less). Trees do not extrapolate; the baseline does, so an input 1.5× larger
//!   than any seen still gets a proportionally larger prediction.
//! * **Censoring**: a run OOM-killed at cap L only shows peak > L, a run killed at its
//!   timeout T only shows wall > T. Such runs are trained on a conservative target
//!   `CENSORED_FACTOR × max(measured, limit)`, never on the measured value.
//! * **Confidence** (0..1) = data × width × range, where data = min(1, n_cal / 100),
//!   width = exp(−upper log offset of peak RSS), range = 1 inside 1.5× the largest input
//!   seen in training, 0.5 beyond. The policy tightens below the static defaults only
//!   above its `confidence_threshold`.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::conformal::conformal_quantile;
use super::gbt::{GbtModel, GbtParams};
use super::{Bounds, ModelError, Prediction, Source};
use crate::features::FeatureVector;
use crate::job::Outcome;
use linfa::ParamGuard;

/// Format version of model files written by this presize.
pub const MODEL_FILE_FORMAT: u32 = 1;
/// Target of a censored observation: this × max(measured, limit).
pub const CENSORED_FACTOR: f64 = 1.5;
/// Minimum calibration rows for a runtime to get its own bounds.
pub const MIN_GROUP_CAL: usize = 30;

/// The three targets, in file order.
pub const TARGETS: [&str; 3] = ["cpu_seconds", "peak_rss_mb", "wall_seconds"];
const FLOORS: [f64; 3] = [0.01, 1.0, 0.01];

/// One settled attempt as training data.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRow {
    pub id: i64,
    /// Feature values in the order of the schema the rows were read for (dense: a feature
    /// the stored row lacks, or a non-finite value, is 0).
    pub features: Vec<f64>,
    pub outcome: Outcome,
    pub cpu_s: Option<f64>,
    pub rss_mb: Option<f64>,
    pub wall_s: Option<f64>,
    /// The memory cap in force (for censoring OOM kills).
    pub memory_cap_mb: Option<f64>,
    /// The timeout in force (for censoring timeouts).
    pub timeout_s: Option<f64>,
}

impl TrainingRow {
    /// The training target for target `t` (0 cpu, 1 rss, 2 wall), or `None` if the row says
    /// nothing usable about it.
    pub fn target(&self, t: usize) -> Option<f64> {
        let pos = |v: Option<f64>| v.filter(|x| x.is_finite() && *x >= 0.0);
        match (self.outcome, t) {
            (Outcome::Ok, 0) => pos(self.cpu_s),
            (Outcome::Ok, 1) => pos(self.rss_mb),
            (Outcome::Ok, 2) => pos(self.wall_s),
            (Outcome::OomKilled, 1) => {
                let cap = pos(self.memory_cap_mb)?;
                Some(CENSORED_FACTOR * cap.max(pos(self.rss_mb).unwrap_or(0.0)))
            }
            (Outcome::TimedOut, 2) => {
                let t = pos(self.timeout_s)?;
                Some(CENSORED_FACTOR * t.max(pos(self.wall_s).unwrap_or(0.0)))
            }
            _ => None,
        }
    }
}

/// Feature schema a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaInfo {
    pub name: String,
    pub version: u32,
    pub hash: String,
    pub names: Vec<String>,
}

/// Model and calibration of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetModel {
    pub target: String,
    pub floor: f64,
    pub baseline_a: f64,
    pub baseline_b: f64,
    pub gbt: GbtModel,
    /// Upper log offsets by runtime (`*` = global).
    pub upper: BTreeMap<String, f64>,
    /// Lower log offsets by runtime (`*` = global).
    pub lower: BTreeMap<String, f64>,
    /// Calibration rows by runtime.
    pub n_cal: BTreeMap<String, usize>,
}

/// A trained model as stored in `PRESIZE_MODEL_DIR/<version>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub format_version: u32,
    pub kind: String,
    pub version: String,
    pub schema: SchemaInfo,
    pub trained_at: String,
    pub rows: usize,
    pub coverage: f64,
    pub max_input_mb: f64,
    pub targets: Vec<TargetModel>,
    /// Holdout metrics recorded at training time.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// What the model saw in training (absent in files written before it was recorded:
    /// then every job counts as novel to the model).
    #[serde(default)]
    pub domain: Option<super::domain::Domain>,
}

/// The runtime a feature vector's `lang_*` features name (`python`, `r`, `shell`, `other`).
pub(crate) fn runtime_of(get: &dyn Fn(&str) -> f64) -> &'static str {
    if get("lang_python") > 0.0 {
        "python"
    } else if get("lang_r") > 0.0 {
        "r"
    } else if get("lang_shell") > 0.0 {
        "shell"
    } else {
        "other"
    }
}

fn input_term(input_mb: f64) -> f64 {
    (1.0 + input_mb.max(0.0)).ln()
}

/// Fit `y ≈ a + b·x` by least squares with b clamped to [0, 1.5].
fn fit_baseline(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let b = if sxx > 1e-12 {
        (sxy / sxx).clamp(0.0, 1.5)
    } else {
        0.0
    };
    (my - b * mx, b)
}

/// What [`TrainedModel::train`] reports while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainProgress<'a> {
    /// Training of a target starts.
    Target(&'a str),
    /// `done` of at most `total` trees of `target` are built (early stopping may end sooner).
    Tree {
        target: &'a str,
        done: usize,
        total: usize,
    },
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Target coverage of the upper bounds.
    pub coverage: f64,
    /// Share of the training rows (the latest) used for conformal calibration.
    pub calibration_fraction: f64,
    pub n_trees: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            coverage: 0.95,
            calibration_fraction: 0.25,
            n_trees: 200,
            learning_rate: 0.05,
            max_depth: 6,
        }
    }
}

impl TrainedModel {
    /// Train on rows in time order (each row's `features` in `schema` order). The latest
    /// `calibration_fraction` calibrate the bounds.
    pub fn train(
        rows: &[TrainingRow],
        schema: &crate::features::Schema,
        cfg: &TrainConfig,
        version: String,
        progress: &mut dyn FnMut(TrainProgress<'_>),
    ) -> Result<Self, ModelError> {
        let names = &schema.names;
        let nf = names.len();
        let at = |r: &TrainingRow, i: Option<usize>| -> f64 {
            i.and_then(|i| r.features.get(i))
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or(0.0)
        };
        let input_ix = schema.index_of("input_total_mb");
        let lang_ix = [
            schema.index_of("lang_python"),
            schema.index_of("lang_r"),
            schema.index_of("lang_shell"),
        ];
        let fill = |r: &TrainingRow, out: &mut [f64]| {
            for (o, v) in out
                .iter_mut()
                .zip(r.features.iter().chain(std::iter::repeat(&0.0)))
            {
                *o = if v.is_finite() { *v } else { 0.0 };
            }
        };
        let mut targets = Vec::new();
        let mut max_input_mb: f64 = 0.0;
        let mut domain = super::domain::Domain::default();
        let domain_ix = super::domain::DomainIndex::new(names);
        for r in rows {
            max_input_mb = max_input_mb.max(at(r, input_ix));
            domain.observe_dense(&domain_ix, &|i| at(r, Some(i)));
        }
        for (t, name) in TARGETS.iter().enumerate() {
            progress(TrainProgress::Target(name));
            let usable: Vec<(&TrainingRow, f64)> = rows
                .iter()
                .filter_map(|r| r.target(t).map(|y| (r, y.max(FLOORS[t]).ln())))
                .collect();
            if usable.len() < 10 {
                return Err(ModelError::Corrupt {
                    path: "training data".into(),
                    reason: format!("only {} usable rows for {name}", usable.len()),
                });
            }
            let n_cal = ((usable.len() as f64) * cfg.calibration_fraction).round() as usize;
            let n_cal = n_cal.clamp(1, usable.len() - 5);
            let (fit_rows, cal_rows) = usable.split_at(usable.len() - n_cal);
            let xs: Vec<f64> = fit_rows
                .iter()
                .map(|(r, _)| input_term(at(r, input_ix)))
                .collect();
            let ys: Vec<f64> = fit_rows.iter().map(|(_, y)| *y).collect();
            let (a, b) = fit_baseline(&xs, &ys);
            let mut x = Array2::<f64>::zeros((fit_rows.len(), nf));
            let mut resid = Array1::<f64>::zeros(fit_rows.len());
            for (i, ((r, y), mut xr)) in fit_rows.iter().zip(x.outer_iter_mut()).enumerate() {
                if let Some(out) = xr.as_slice_mut() {
                    fill(r, out);
                }
                resid[i] = y - (a + b * xs[i]);
            }
            let n = fit_rows.len();
            let params = GbtParams::new()
                .n_trees(cfg.n_trees)
                .learning_rate(cfg.learning_rate)
                .max_depth(cfg.max_depth)
                .max_leaves(31)
                .min_samples_leaf((n / 40).clamp(2, 20))
                .l2(1.0)
                .check()?;
            let gbt = params.fit_weighted_with_progress(
                x.view(),
                resid.view(),
                None,
                &mut |done, total| {
                    progress(TrainProgress::Tree {
                        target: name,
                        done,
                        total,
                    })
                },
            )?;
            drop(x);
            let mut tm = TargetModel {
                target: name.to_string(),
                floor: FLOORS[t],
                baseline_a: a,
                baseline_b: b,
                gbt,
                upper: BTreeMap::new(),
                lower: BTreeMap::new(),
                n_cal: BTreeMap::new(),
            };
            // Split-conformal: residuals of the calibration rows, by runtime and overall.
            let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let mut v = vec![0.0; nf];
            for (r, y) in cal_rows {
                fill(r, &mut v);
                let pred = tm.point_log(&v, at(r, input_ix));
                let get = |k: &str| match k {
                    "lang_python" => at(r, lang_ix[0]),
                    "lang_r" => at(r, lang_ix[1]),
                    "lang_shell" => at(r, lang_ix[2]),
                    _ => 0.0,
                };
                let res = y - pred;
                groups.entry("*".into()).or_default().push(res);
                groups.entry(runtime_of(&get).into()).or_default().push(res);
            }
            for (g, res) in groups {
                if g != "*" && res.len() < MIN_GROUP_CAL {
                    continue;
                }
                let up = conformal_quantile(&res, cfg.coverage);
                let neg: Vec<f64> = res.iter().map(|r| -r).collect();
                let lo = conformal_quantile(&neg, cfg.coverage).map(|q| -q);
                // Too few rows for the nominal coverage: fall back to the widest residual.
                let max_abs = res.iter().fold(0.0f64, |m, r| m.max(r.abs()));
                tm.upper
                    .insert(g.clone(), up.unwrap_or(max_abs * 1.5).max(0.0));
                tm.lower
                    .insert(g.clone(), lo.unwrap_or(-max_abs * 1.5).min(0.0));
                tm.n_cal.insert(g, res.len());
            }
            targets.push(tm);
        }
        Ok(TrainedModel {
            format_version: MODEL_FILE_FORMAT,
            kind: "presize-gbt".into(),
            version,
            schema: SchemaInfo {
                name: schema.name.clone(),
                version: schema.version,
                hash: schema.hash.clone(),
                names: schema.names.clone(),
            },
            trained_at: crate::util::now_rfc3339(),
            rows: rows.len(),
            coverage: cfg.coverage,
            max_input_mb,
            targets,
            metrics: serde_json::Value::Null,
            domain: Some(domain),
        })
    }

    /// Parse and check a model file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let m: TrainedModel = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if m.format_version != MODEL_FILE_FORMAT {
            return Err(format!(
                "format version {} is not supported (this presize reads {MODEL_FILE_FORMAT})",
                m.format_version
            ));
        }
        if m.kind != "presize-gbt" || m.targets.len() != TARGETS.len() {
            return Err("not a presize model file".into());
        }
        for t in &m.targets {
            if t.gbt.n_features() != m.schema.names.len() {
                return Err(format!(
                    "target {} has the wrong number of features",
                    t.target
                ));
            }
            if !t.upper.contains_key("*") || !t.lower.contains_key("*") {
                return Err(format!("target {} has no global calibration", t.target));
            }
        }
        Ok(m)
    }

    /// Read a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_json(&text).map_err(|reason| ModelError::Corrupt {
            path: path.to_owned(),
            reason,
        })
    }

    /// Serialise (floats round-trip exactly).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Predict; `Err` when the vector's schema differs from the one trained on and lacks
    /// one of the model's features. A vector whose schema only adds features (a newer
    /// presize) is read by name, so a model keeps working until the next retrain.
    pub fn predict(&self, fv: &FeatureVector) -> Result<Prediction, String> {
        let by_name;
        let values = if fv.schema.hash == self.schema.hash {
            &fv.values
        } else if crate::features::Schema::compute_hash(
            &self.schema.name,
            self.schema.version,
            &self.schema.names,
        ) != self.schema.hash
            || self.schema.version != fv.schema.version
        {
            return Err(format!(
                "model {} records feature schema {} that does not match its own feature names (or another schema version than this job's {}); retrain",
                self.version, self.schema.hash, fv.schema.hash
            ));
        } else {
            let picked: Option<Vec<f64>> = self.schema.names.iter().map(|n| fv.get(n)).collect();
            match picked {
                Some(v) => {
                    by_name = v;
                    &by_name
                }
                None => {
                    return Err(format!(
                        "model {} was trained on feature schema {}, this job's features have schema {} without all of its features; retrain",
                        self.version, self.schema.hash, fv.schema.hash
                    ))
                }
            }
        };
        let get = |k: &str| fv.get(k).filter(|v| v.is_finite()).unwrap_or(0.0);
        let runtime = runtime_of(&get);
        let input_mb = get("input_total_mb");
        let mut point = [0.0; 3];
        let mut up = [0.0; 3];
        let mut lo = [0.0; 3];
        let mut rss_width = 0.0;
        let mut n_cal_rss = 0;
        for (t, tm) in self.targets.iter().enumerate() {
            let p = tm.point_log(values, input_mb);
            let key = if tm.upper.contains_key(runtime) {
                runtime
            } else {
                "*"
            };
            let u = tm.upper.get(key).copied().unwrap_or(1.0);
            let l = tm.lower.get(key).copied().unwrap_or(-1.0);
            point[t] = p.exp();
            up[t] = (p + u).exp();
            lo[t] = (p + l).exp();
            if t == 1 {
                rss_width = u;
                n_cal_rss = tm.n_cal.get(key).copied().unwrap_or(0);
            }
        }
        let data = (n_cal_rss as f64 / 100.0).min(1.0);
        let width = (-rss_width.max(0.0)).exp();
        let range = if input_mb <= 1.5 * self.max_input_mb.max(1.0) {
            1.0
        } else {
            0.5
        };
        Ok(Prediction {
            cpu_seconds: point[0],
            peak_rss_mb: point[1],
            wall_seconds: point[2],
            confidence: (data * width * range).clamp(0.0, 1.0),
            upper: Bounds {
                cpu_seconds: up[0],
                peak_rss_mb: up[1],
                wall_seconds: up[2],
            },
            lower: Bounds {
                cpu_seconds: lo[0],
                peak_rss_mb: lo[1],
                wall_seconds: lo[2],
            },
            model_version: self.version.clone(),
            source: Source::Model,
        }
        .sanitized())
    }
}

impl TargetModel {
    /// Point prediction in log space: baseline + trees.
    pub fn point_log(&self, values: &[f64], input_mb: f64) -> f64 {
        let base = self.baseline_a + self.baseline_b * input_term(input_mb);
        let r = self.gbt.predict_row(values);
        let p = if r.is_finite() { base + r } else { base };
        p.max(self.floor.ln())
    }
}

#[cfg(test)]
mod tests;
