//! A small histogram-based gradient-boosted regression tree learner, shaped as a linfa estimator.
//!
//! `GbtParams` (builder) → `GbtValidParams` (checked by linfa's [`ParamGuard`]) → [`Fit`] on a
//! `DatasetBase<ArrayBase<_, Ix2>, _>` of `f64` → [`GbtModel`], which implements
//! [`PredictInplace`] (so `model.predict(&x)` works) and a non-allocating [`GbtModel::predict_row`].
//!
//! * Losses: squared error, and pinball loss at quantile `alpha`. Pinball trees are grown on
//!   gradient `-alpha` / `1-alpha` with hessian 1 (times the sample weight), and each leaf's value
//!   is then set to the weighted `alpha`-quantile of the residuals of its rows (LightGBM's
//!   quantile leaf renewal). Initial prediction: weighted mean / weighted `alpha`-quantile.
//! * Features are quantised to at most `max_bins` (≤ 256) bins per feature with bin edges at
//!   quantiles of the training values (midpoints between distinct values, fully deterministic).
//!   Trees store raw-value thresholds: a row goes left when `value <= threshold`, so prediction
//!   needs no binning. **NaN at prediction time goes left**; non-finite values are rejected at fit.
//! * Growth is leaf-wise (best gain first) up to `max_leaves`, bounded by `max_depth`, with the
//!   histogram subtraction trick (the smaller child is built, the larger is parent − smaller).
//! * Sample weights come from the dataset's weights when present; zero-weight rows are dropped
//!   before anything else, so they influence neither the bin edges nor `min_samples_leaf`.
//! * Early stopping: with `validation_fraction > 0` the *last* rows (in the given order, for
//!   time-ordered data) are held out; training stops after `early_stopping_rounds` trees without
//!   improvement of the validation loss and the model is truncated to the best iteration.
//! * No randomness, no threads: the same data and parameters give bit-identical models.
//! * `Serialize`/`Deserialize` (validated on load, so a hand-edited file cannot make prediction
//!   panic or loop); exact float round-trip needs serde_json's `float_roundtrip` feature.

use linfa::dataset::{AsTargets, DatasetBase};
use linfa::traits::{Fit, PredictInplace};
use linfa::ParamGuard;
use ndarray::{Array1, ArrayBase, ArrayView1, ArrayView2, Data, Ix1, Ix2};
use serde::{Deserialize, Serialize};

/// Version of the serialised model layout; loading any other version fails.
pub const MODEL_FORMAT_VERSION: u32 = 1;
const LEAF: u32 = 1 << 31;
const MAX_LEAVES: usize = 1 << 16;

/// Errors from parameter checking, fitting and model loading.
#[derive(Debug, thiserror::Error)]
pub enum GbtError {
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam { name: &'static str, reason: String },
    #[error("dataset has no rows")]
    EmptyDataset,
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("non-finite {what} in row {row}")]
    NonFinite { what: &'static str, row: usize },
    #[error("invalid sample weight in row {row} (must be finite and >= 0)")]
    InvalidWeight { row: usize },
    #[error("no training rows with positive weight (after the validation split)")]
    NoTrainingRows,
    #[error("the validation rows have zero total weight")]
    ZeroValidationWeight,
    #[error("training diverged (non-finite prediction)")]
    Diverged,
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error(transparent)]
    Linfa(#[from] linfa::Error),
}

fn bad(name: &'static str, reason: impl Into<String>) -> GbtError {
    GbtError::InvalidParam {
        name,
        reason: reason.into(),
    }
}

/// The training objective.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loss {
    /// Squared error; predicts the conditional mean.
    Squared,
    /// Pinball loss; predicts the conditional `alpha`-quantile, `0 < alpha < 1`.
    Quantile { alpha: f64 },
}

/// The hyperparameters; in JSON/TOML missing fields take their defaults, unknown ones are errors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    loss: Loss,
    n_trees: usize,
    learning_rate: f64,
    max_depth: usize,
    max_leaves: usize,
    min_samples_leaf: usize,
    min_hessian_leaf: f64,
    l2: f64,
    min_split_gain: f64,
    max_bins: usize,
    validation_fraction: f64,
    early_stopping_rounds: usize,
}

/// Checked hyperparameters; obtain via [`GbtParams::check`] (or let `fit` check them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Config", into = "Config")]
pub struct GbtValidParams(Config);

/// Unchecked hyperparameters with a builder. Defaults: squared loss, 100 trees, learning rate
/// 0.1, max depth 6, 31 leaves, 20 samples and hessian 1e-3 per leaf, L2 0, min split gain 0,
/// 256 bins, no validation split, early-stopping patience 20.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "Config", into = "Config")]
pub struct GbtParams(GbtValidParams);

impl From<Config> for GbtParams {
    fn from(c: Config) -> Self {
        GbtParams(GbtValidParams(c))
    }
}
impl From<GbtParams> for Config {
    fn from(p: GbtParams) -> Self {
        p.0 .0
    }
}
impl From<GbtValidParams> for Config {
    fn from(p: GbtValidParams) -> Self {
        p.0
    }
}
impl TryFrom<Config> for GbtValidParams {
    type Error = GbtError;
    fn try_from(c: Config) -> Result<Self, GbtError> {
        GbtParams::from(c).check()
    }
}

impl Default for GbtParams {
    fn default() -> Self {
        GbtParams(GbtValidParams(Config::default()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            loss: Loss::Squared,
            n_trees: 100,
            learning_rate: 0.1,
            max_depth: 6,
            max_leaves: 31,
            min_samples_leaf: 20,
            min_hessian_leaf: 1e-3,
            l2: 0.0,
            min_split_gain: 0.0,
            max_bins: 256,
            validation_fraction: 0.0,
            early_stopping_rounds: 20,
        }
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $t:ty;)*) => {
        impl GbtParams {
            $($(#[$m])* pub fn $name(mut self, v: $t) -> Self { self.0 .0.$name = v; self })*
        }
        impl GbtValidParams {
            $(
                #[doc = concat!("The `", stringify!($name), "` setting.")]
                pub fn $name(&self) -> $t { self.0.$name }
            )*
        }
    };
}
setters! {
    /// Training objective.
    loss: Loss;
    /// Number of boosting rounds (≥ 1); fewer trees are kept if early stopping triggers.
    n_trees: usize;
    /// Shrinkage per tree, > 0.
    learning_rate: f64;
    /// Maximum depth of a leaf (root = 0), 1..=16.
    max_depth: usize;
    /// Maximum leaves per tree, 2..=65536 (leaf-wise growth).
    max_leaves: usize;
    /// Minimum (positive-weight) rows in a leaf, ≥ 1.
    min_samples_leaf: usize;
    /// Minimum sum of hessians (= sample weights) in a leaf, ≥ 0.
    min_hessian_leaf: f64;
    /// L2 penalty on leaf values (squared loss), ≥ 0.
    l2: f64;
    /// Minimum gain for a split, ≥ 0.
    min_split_gain: f64;
    /// Bins per feature, 2..=256.
    max_bins: usize;
    /// Fraction of the last rows held out for early stopping, in [0, 0.5).
    validation_fraction: f64;
    /// Early-stopping patience in trees, ≥ 1 (used only with a validation split).
    early_stopping_rounds: usize;
}

impl GbtParams {
    /// The default parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Shorthand for `.loss(Loss::Quantile { alpha })`.
    pub fn quantile(self, alpha: f64) -> Self {
        self.loss(Loss::Quantile { alpha })
    }
}

impl ParamGuard for GbtParams {
    type Checked = GbtValidParams;
    type Error = GbtError;

    fn check_ref(&self) -> Result<&GbtValidParams, GbtError> {
        let c = &self.0 .0;
        if let Loss::Quantile { alpha } = c.loss {
            if !(alpha > 0.0 && alpha < 1.0) {
                return Err(bad("alpha", format!("{alpha} is not in (0, 1)")));
            }
        }
        if c.n_trees == 0 {
            return Err(bad("n_trees", "must be at least 1"));
        }
        if !(c.learning_rate > 0.0 && c.learning_rate.is_finite()) {
            return Err(bad(
                "learning_rate",
                format!("{} is not > 0", c.learning_rate),
            ));
        }
        if !(1..=16).contains(&c.max_depth) {
            return Err(bad(
                "max_depth",
                format!("{} is not in 1..=16", c.max_depth),
            ));
        }
        if !(2..=MAX_LEAVES).contains(&c.max_leaves) {
            return Err(bad(
                "max_leaves",
                format!("{} is not in 2..=65536", c.max_leaves),
            ));
        }
        if c.min_samples_leaf == 0 {
            return Err(bad("min_samples_leaf", "must be at least 1"));
        }
        for (name, v) in [
            ("min_hessian_leaf", c.min_hessian_leaf),
            ("l2", c.l2),
            ("min_split_gain", c.min_split_gain),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(bad(name, format!("{v} is not a finite value >= 0")));
            }
        }
        if !(2..=256).contains(&c.max_bins) {
            return Err(bad("max_bins", format!("{} is not in 2..=256", c.max_bins)));
        }
        if !(c.validation_fraction >= 0.0 && c.validation_fraction < 0.5) {
            let v = c.validation_fraction;
            return Err(bad(
                "validation_fraction",
                format!("{v} is not in [0, 0.5)"),
            ));
        }
        if c.early_stopping_rounds == 0 {
            return Err(bad("early_stopping_rounds", "must be at least 1"));
        }
        Ok(&self.0)
    }

    fn check(self) -> Result<GbtValidParams, GbtError> {
        self.check_ref()?;
        Ok(self.0)
    }
}

/// A fitted model: `base_score + Σ tree(row)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelRepr", into = "ModelRepr")]
pub struct GbtModel {
    n_features: usize,
    params: GbtValidParams,
    base_score: f64,
    trees: Vec<Tree>,
    best_iteration: Option<usize>,
    validation_loss: Vec<f64>,
    importance: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct ModelRepr {
    format_version: u32,
    n_features: usize,
    params: GbtValidParams,
    base_score: f64,
    best_iteration: Option<usize>,
    validation_loss: Vec<f64>,
    feature_importance: Vec<f64>,
    trees: Vec<Tree>,
}

impl From<GbtModel> for ModelRepr {
    fn from(m: GbtModel) -> Self {
        ModelRepr {
            format_version: MODEL_FORMAT_VERSION,
            n_features: m.n_features,
            params: m.params,
            base_score: m.base_score,
            best_iteration: m.best_iteration,
            validation_loss: m.validation_loss,
            feature_importance: m.importance,
            trees: m.trees,
        }
    }
}

impl TryFrom<ModelRepr> for GbtModel {
    type Error = GbtError;
    fn try_from(r: ModelRepr) -> Result<Self, GbtError> {
        let invalid = |s: &str| Err(GbtError::InvalidModel(s.into()));
        if r.format_version != MODEL_FORMAT_VERSION {
            return invalid("unsupported format_version");
        }
        if r.feature_importance.len() != r.n_features || !r.base_score.is_finite() {
            return invalid("feature_importance length or base_score");
        }
        let nf = r.n_features;
        let bad_feature = |t: &Tree| {
            (0..t.nodes.len()).any(|i| !t.is_leaf(i) && t.nodes[i].feature as usize >= nf)
        };
        if r.trees.iter().any(bad_feature) {
            return invalid("feature index out of range");
        }
        Ok(GbtModel {
            n_features: nf,
            params: r.params,
            base_score: r.base_score,
            trees: r.trees,
            best_iteration: r.best_iteration,
            validation_loss: r.validation_loss,
            importance: r.feature_importance,
        })
    }
}

impl GbtModel {
    /// Unchecked default parameters; shorthand for [`GbtParams::new`].
    pub fn params() -> GbtParams {
        GbtParams::new()
    }

    /// Predict one row (length must equal [`n_features`](Self::n_features); otherwise `NaN`).
    /// NaN feature values go left at every split. Allocation-free.
    pub fn predict_row(&self, row: &[f64]) -> f64 {
        if row.len() != self.n_features {
            return f64::NAN;
        }
        // Walk four trees in lockstep (branch-free, for instruction-level parallelism); leaf
        // values are added in tree order, so the sum equals a sequential walk bit for bit.
        let mut sum = self.base_score;
        let mut quads = self.trees.chunks_exact(4);
        for q in &mut quads {
            let mut c = [0usize; 4];
            for _ in 0..q.iter().map(|t| t.depth).max().unwrap_or(0) {
                for (c, t) in c.iter_mut().zip(q) {
                    let n = &t.nodes[*c];
                    *c = n.left as usize + usize::from(row[n.feature as usize] > n.threshold);
                }
            }
            for (c, t) in c.iter().zip(q) {
                sum += t.value[*c];
            }
        }
        quads
            .remainder()
            .iter()
            .fold(sum, |s, t| s + t.predict(row))
    }

    /// Like [`predict_row`](Self::predict_row) but a wrong row length is an error.
    pub fn try_predict_row(&self, row: &[f64]) -> Result<f64, GbtError> {
        if row.len() != self.n_features {
            return Err(GbtError::LengthMismatch {
                what: "row",
                expected: self.n_features,
                got: row.len(),
            });
        }
        Ok(self.predict_row(row))
    }

    /// Number of features the model was trained on.
    pub fn n_features(&self) -> usize {
        self.n_features
    }
    /// Number of trees kept (after early-stopping truncation).
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }
    /// With a validation split: the number of trees at the best validation loss (= `n_trees()`).
    pub fn best_iteration(&self) -> Option<usize> {
        self.best_iteration
    }
    /// Validation loss after each tree (empty without a validation split); weighted mean
    /// squared error or pinball loss.
    pub fn validation_loss(&self) -> &[f64] {
        &self.validation_loss
    }
    /// Total split gain per feature over the kept trees.
    pub fn feature_importance(&self) -> &[f64] {
        &self.importance
    }
    /// The initial prediction (weighted mean or quantile of the training targets).
    pub fn base_score(&self) -> f64 {
        self.base_score
    }
    /// The parameters the model was trained with.
    pub fn hyperparams(&self) -> &GbtValidParams {
        &self.params
    }
}

impl<D: Data<Elem = f64>> PredictInplace<ArrayBase<D, Ix2>, Array1<f64>> for GbtModel {
    /// Fills `y` with predictions; rows get `NaN` if the column count is wrong. Extra entries
    /// of a too-long `y` are left untouched.
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<f64>) {
        let mut buf = Vec::with_capacity(x.ncols());
        for (row, out) in x.outer_iter().zip(y.iter_mut()) {
            *out = match row.as_slice() {
                Some(s) => self.predict_row(s),
                None => {
                    buf.clear();
                    buf.extend(row.iter().copied());
                    self.predict_row(&buf)
                }
            };
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<f64> {
        Array1::zeros(x.nrows())
    }
}

impl<D, T> Fit<ArrayBase<D, Ix2>, T, GbtError> for GbtValidParams
where
    D: Data<Elem = f64>,
    T: AsTargets<Elem = f64, Ix = Ix1>,
{
    type Object = GbtModel;

    /// Fits on the dataset; its weights (if any) are the sample weights.
    fn fit(&self, ds: &DatasetBase<ArrayBase<D, Ix2>, T>) -> Result<GbtModel, GbtError> {
        let w = (!ds.weights.is_empty()).then(|| ds.weights.mapv(f64::from));
        self.fit_weighted(
            ds.records.view(),
            ds.targets.as_targets(),
            w.as_ref().map(|w| w.view()),
        )
    }
}

impl GbtValidParams {
    /// Fit directly on arrays, with optional `f64` sample weights.
    pub fn fit_weighted(
        &self,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
        weights: Option<ArrayView1<f64>>,
    ) -> Result<GbtModel, GbtError> {
        train::train(self, x, y, weights, &mut |_, _| {})
    }

    /// [`GbtValidParams::fit_weighted`] that reports `(trees_done, n_trees)` after each tree.
    pub fn fit_weighted_with_progress(
        &self,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
        weights: Option<ArrayView1<f64>>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GbtModel, GbtError> {
        train::train(self, x, y, weights, progress)
    }
}

mod binning;
mod train;
mod tree;

use tree::{RawNode, Tree};

#[cfg(test)]
mod tests;
