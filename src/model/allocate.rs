//! Online memory allocation per task type: predictive draws from competing models,
//! a cost-aware choice of the allocation, and the retry rule after an OOM kill.
//!
//! For one task type the history holds (input size `x`, numeric argument `x2`, peak `y`,
//! runtime) observations. Each [`ModelKind`] turns the history into *draws*: plausible peaks
//! for a new task of that size (the empirical peaks; or a size fit on one covariate plus its
//! leave-one-out residuals, evaluated no further than [`AllocConfig::extrapolate`] × the
//! largest size seen).
//! The allocation is the draw that minimises the expected wastage
//! `E[(a − y)+] + E[1(y > a)·(a + cost of the retries)]` under the retry rule the sizing
//! engine applies after an OOM kill ([`retry_over_draws`]), so coverage adapts per task type.
//!
//! Which model serves a task type is decided online by a *prequential* score: every
//! observation, before it joins the history, is allocated by every model on the history
//! before it; the simulated cost (wastage including retries) is that observation's
//! contribution per model, and the model with the lowest sum over the observations in the
//! window serves the next task. The history is a sliding window of the last
//! [`AllocConfig::window`] observations, so the work per decision is bounded whatever the
//! history's length, and a window rebuilt from the last 2 × `window` observations is
//! exactly the window that was grown one observation at a time ([`TaskHistory::rebuild`]):
//! `presize run`, which reads the window from the store, and `presize replay`, which grows
//! it, make the same decision. Everything is deterministic, uses only the history before
//! the task and never returns a non-finite or non-positive value once a peak has been seen.

use serde::{Deserialize, Serialize};

mod draws;

use draws::clean_x;
pub use draws::{model_draws, Draw};

/// One finished task of a task type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Input size (any unit); anything ≤ 0 counts as unknown.
    pub x: f64,
    /// Second covariate: the job's largest numeric argument; ≤ 0 counts as unknown.
    #[serde(default)]
    pub x2: f64,
    /// Peak memory (bytes).
    pub y: f64,
    /// Runtime (any unit, used as a relative weight only).
    pub runtime: f64,
}

/// Models that produce predictive draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Size-independent: the peaks seen.
    Empirical,
    /// log y = a + b·log x, x clipped to the observed range; LOO log residuals.
    LogLog,
    /// y = a + b·x, x clipped to the observed range; LOO ratio residuals.
    Linear,
    /// [`ModelKind::LogLog`] on the numeric argument `x2`.
    LogLogArg,
    /// [`ModelKind::Linear`] on the numeric argument `x2`.
    LinearArg,
}

/// The size a fit follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covariate {
    /// The input size.
    Input,
    /// The largest numeric argument.
    Arg,
}

impl Covariate {
    pub fn as_str(self) -> &'static str {
        match self {
            Covariate::Input => "input size (MB)",
            Covariate::Arg => "numeric argument",
        }
    }
}

impl ModelKind {
    /// The covariate of a size fit; `None` for the size-independent model.
    pub fn covariate(self) -> Option<Covariate> {
        match self {
            ModelKind::Empirical => None,
            ModelKind::LogLog | ModelKind::Linear => Some(Covariate::Input),
            ModelKind::LogLogArg | ModelKind::LinearArg => Some(Covariate::Arg),
        }
    }

    /// A few words for a reason line.
    pub fn describe(self) -> &'static str {
        match self {
            ModelKind::Empirical => "the peaks seen",
            ModelKind::LogLog => "log-log fit on the input size",
            ModelKind::Linear => "linear fit on the input size",
            ModelKind::LogLogArg => "log-log fit on the numeric argument",
            ModelKind::LinearArg => "linear fit on the numeric argument",
        }
    }
}

/// How a model's prequential cost is weighted per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreWeight {
    /// cost / y: every task counts alike, whatever its size.
    Relative,
    /// cost in bytes.
    Bytes,
    /// cost × runtime (the replay objective).
    Runtime,
}

/// The allocation model's knobs. `run` and `replay` use these defaults with the
/// `[policy]` section's window, margin, failure cost and extrapolation on top (the sizing
/// engine builds that configuration; this module knows nothing of the policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllocConfig {
    /// Models that compete per task type.
    pub models: Vec<ModelKind>,
    /// Observations a size fit needs before it is used at all.
    pub min_fit_history: usize,
    /// Observations a model needs before its prequential cost is scored.
    pub min_score_history: usize,
    /// Per-task weight of the prequential cost.
    pub score_weight: ScoreWeight,
    /// Exponential forgetting of old prequential costs (1 = none).
    pub score_decay: f64,
    /// Weight each draw by the runtime of the task it came from (longer tasks cost more
    /// when they fail).
    pub runtime_weighted_draws: bool,
    /// First retry goes at least this far above the failed cap.
    pub retry_min_step: f64,
    /// Retry growth once the cap already exceeds every draw.
    pub retry_beyond_step: f64,
    /// Multiplier on the chosen allocation (1 = pure cost-aware choice).
    pub margin: f64,
    /// With no history at all: this first allocation (bytes).
    pub cold_start_bytes: f64,
    /// Pseudo-draws beyond the largest draw (0 = none): the next peak exceeds all n
    /// draws with probability about 1/(n+1), spread over an exponential tail in log
    /// space whose scale is the Hill estimate of the top `tail_k` draws.
    pub tail_draws: usize,
    /// Weight of the tail, in observations (1 = one more observation).
    pub tail_mass: f64,
    /// Order statistics used by the Hill estimate.
    pub tail_k: usize,
    /// Floor of the tail scale (log units, e.g. 0.002 = 0.2 %).
    pub tail_min_scale: f64,
    /// Extra cost of a failed attempt beyond the memory it held, as a fraction of the
    /// median draw (a typical footprint of the task type). 0 = wastage only; > 0 stops
    /// the choice from gambling on tiny first caps whose failure holds little memory
    /// (cheap in GB·h, but an OOM kill and a rerun all the same).
    pub failure_cost: f64,
    /// Observations kept per task type (the sliding window); 0 = unbounded.
    pub window: usize,
    /// A size fit is evaluated at most this many times beyond the largest size seen
    /// (1 = clipped to the observed range). Above 1 a job somewhat larger than any seen
    /// gets a larger allocation; far beyond it the fit is not trusted further.
    pub extrapolate: f64,
}

impl Default for AllocConfig {
    fn default() -> Self {
        AllocConfig {
            models: vec![
                ModelKind::Empirical,
                ModelKind::LogLog,
                ModelKind::Linear,
                ModelKind::LogLogArg,
                ModelKind::LinearArg,
            ],
            min_fit_history: 8,
            min_score_history: 3,
            score_weight: ScoreWeight::Runtime,
            score_decay: 1.0,
            runtime_weighted_draws: false,
            retry_min_step: 1.2,
            retry_beyond_step: 2.0,
            margin: 1.0,
            cold_start_bytes: 4e9,
            tail_draws: 4,
            tail_mass: 1.0,
            tail_k: 5,
            tail_min_scale: 0.002,
            failure_cost: 0.1,
            window: 0,
            extrapolate: 1.0,
        }
    }
}

/// The history of one task type (a sliding window) plus each observation's prequential
/// cost per model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskHistory {
    obs: std::collections::VecDeque<Observation>,
    /// Per observation in `obs` (same order): its cost under each entry of `cfg.models`,
    /// or empty when it arrived before `min_score_history` observations.
    contrib: std::collections::VecDeque<Vec<f64>>,
    /// Sum of `contrib` per model.
    scores: Vec<f64>,
    scored: u64,
}

impl TaskHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The window grown from `obs` (oldest first). With at least 2 × `cfg.window`
    /// observations the result equals the history that saw every earlier observation too.
    pub fn rebuild(obs: &[Observation], cfg: &AllocConfig) -> Self {
        let mut h = TaskHistory::new();
        for o in obs {
            h.push(*o, cfg);
        }
        h
    }

    pub fn observations(&self) -> impl ExactSizeIterator<Item = &Observation> {
        self.obs.iter()
    }

    pub fn len(&self) -> usize {
        self.obs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.obs.is_empty()
    }

    /// Prequential cost per model (order of `cfg.models`) over the window.
    pub fn scores(&self) -> &[f64] {
        &self.scores
    }

    /// Largest peak seen.
    pub fn max_seen(&self) -> f64 {
        self.obs.iter().map(|o| o.y).fold(0.0, f64::max)
    }

    /// Add a finished task: first score every model on it (using only the history
    /// before it), then append it, dropping the oldest beyond the window. Non-finite or
    /// non-positive peaks are ignored.
    pub fn push(&mut self, o: Observation, cfg: &AllocConfig) {
        if !(o.y.is_finite() && o.y > 0.0) {
            return;
        }
        let o = Observation {
            x: if o.x.is_finite() { o.x } else { 0.0 },
            x2: if o.x2.is_finite() { o.x2 } else { 0.0 },
            y: o.y,
            runtime: if o.runtime.is_finite() && o.runtime > 0.0 {
                o.runtime
            } else {
                1.0
            },
        };
        if self.scores.len() != cfg.models.len() {
            self.scores = vec![0.0; cfg.models.len()];
            self.contrib.iter_mut().for_each(Vec::clear);
            self.scored = 0;
        }
        let mut c = Vec::new();
        if self.obs.len() >= cfg.min_score_history.max(1) {
            let decay = cfg.score_decay.clamp(0.0, 1.0);
            let obs = self.obs.make_contiguous();
            // A fit on a covariate that never varied falls back to the empirical draws:
            // its cost is the empirical model's, computed once.
            let varies = |f: fn(&Observation) -> f64| {
                let first = obs.first().map(|o| clean_x(f(o)));
                obs.iter().any(|o| Some(clean_x(f(o))) != first)
            };
            let (input_varies, arg_varies) = (varies(|o| o.x), varies(|o| o.x2));
            let mut empirical_cost = None;
            for &m in &cfg.models {
                let degenerate = match m.covariate() {
                    None => true,
                    Some(Covariate::Input) => !input_varies,
                    Some(Covariate::Arg) => !arg_varies,
                };
                let cost = match (degenerate, empirical_cost) {
                    (true, Some(c)) => c,
                    _ => {
                        let kind = if degenerate { ModelKind::Empirical } else { m };
                        let draws = model_draws(obs, kind, o.x, o.x2, cfg);
                        let c = simulated_cost(&draws, o.y, cfg);
                        if degenerate {
                            empirical_cost = Some(c);
                        }
                        c
                    }
                };
                c.push(match cfg.score_weight {
                    ScoreWeight::Relative => cost / o.y,
                    ScoreWeight::Bytes => cost,
                    ScoreWeight::Runtime => cost * o.runtime,
                });
            }
            if decay < 1.0 {
                for old in self.contrib.iter_mut() {
                    old.iter_mut().for_each(|v| *v *= decay);
                }
            }
            self.scored += 1;
        }
        self.obs.push_back(o);
        self.contrib.push_back(c);
        if cfg.window > 0 {
            while self.obs.len() > cfg.window {
                self.obs.pop_front();
                self.contrib.pop_front();
            }
        }
        self.obs.make_contiguous();
        // Summed afresh (bounded by the window): no drift from adding and subtracting.
        self.scores.iter_mut().for_each(|v| *v = 0.0);
        for c in &self.contrib {
            for (s, v) in self.scores.iter_mut().zip(c) {
                *s += v;
            }
        }
    }

    /// The model that serves the next task: the lowest prequential cost; ties and an
    /// unscored history go to the first model listed.
    pub fn chosen_model(&self, cfg: &AllocConfig) -> ModelKind {
        let first = cfg.models.first().copied().unwrap_or(ModelKind::Empirical);
        if self.scored == 0
            || self.scores.len() != cfg.models.len()
            || self.contrib.iter().all(Vec::is_empty)
        {
            return first;
        }
        let mut best = (first, f64::INFINITY);
        for (k, &m) in cfg.models.iter().enumerate() {
            if self.scores[k] < best.1 {
                best = (m, self.scores[k]);
            }
        }
        best.0
    }

    /// Draws of the next peak under the chosen model at sizes `x`, `x2`.
    pub fn draws(&self, x: f64, x2: f64, cfg: &AllocConfig) -> Vec<Draw> {
        // `push` leaves the window contiguous.
        let (front, back) = self.obs.as_slices();
        if back.is_empty() {
            model_draws(front, self.chosen_model(cfg), x, x2, cfg)
        } else {
            let obs: Vec<Observation> = self.obs.iter().copied().collect();
            model_draws(&obs, self.chosen_model(cfg), x, x2, cfg)
        }
    }

    /// The covariate the chosen model follows and the range of it seen, or `None` for
    /// a size-independent model.
    pub fn covariate_range(&self, cfg: &AllocConfig) -> Option<(Covariate, (f64, f64))> {
        let kind = self.chosen_model(cfg).covariate()?;
        let get = |o: &Observation| match kind {
            Covariate::Input => o.x,
            Covariate::Arg => o.x2,
        };
        let lo = self.obs.iter().map(get).fold(f64::INFINITY, f64::min);
        let hi = self.obs.iter().map(get).fold(0.0, f64::max);
        (hi > 0.0).then_some((kind, (lo, hi)))
    }
}

/// The allocation after a failure at `failed` given the draws' top: the top of the
/// draws if that is at least `retry_min_step`× the failed cap, else grow.
fn retry_from(top: f64, failed: f64, attempt: u32, cfg: &AllocConfig) -> f64 {
    let min_step = cfg.retry_min_step.max(1.01);
    let beyond = cfg.retry_beyond_step.max(min_step);
    let next = if failed < top {
        top.max(failed * min_step)
    } else {
        failed * beyond.powi(attempt.clamp(1, 30) as i32)
    };
    if next.is_finite() {
        next
    } else {
        f64::MAX
    }
}

/// Cost (bytes × unit runtime) of allocating `a` first to a task whose peak is `y`,
/// retrying under the retry rule with the draws' `top`; each failed attempt also costs
/// `penalty` (see [`AllocConfig::failure_cost`]).
fn attempt_cost(a: f64, y: f64, top: f64, penalty: f64, cfg: &AllocConfig) -> f64 {
    let mut a = a;
    let mut cost = 0.0;
    let mut attempt = 0;
    while a < y && attempt < 60 {
        cost += a + penalty;
        attempt += 1;
        a = retry_from(top, a, attempt, cfg);
    }
    cost + (a - y).max(0.0)
}

/// Weighted median of sorted draws.
fn weighted_median(sorted: &[Draw]) -> f64 {
    let total: f64 = sorted.iter().map(|d| d.weight).sum();
    let mut acc = 0.0;
    for d in sorted {
        acc += d.weight;
        if acc >= total / 2.0 {
            return d.value;
        }
    }
    sorted.last().map(|d| d.value).unwrap_or(0.0)
}

/// The cost-aware choice over the draws: `(allocation, top, failure penalty)`.
///
/// Each candidate `a` (a draw) costs Σ over draws `y` of the weight times
/// [`attempt_cost`]`(a, y)`. Every draw is ≤ `top`, so a failed first attempt is always
/// followed by one retry at `max(top, a × retry_min_step)` that fits: the cost is
/// `a − y` for `y ≤ a` and `a + penalty + max(top, a·step) − y` above. With the draws
/// sorted and prefix sums of weights and weighted values, every candidate costs O(1):
/// O(n log n) in all instead of O(n²).
fn choose(draws: &[Draw], cfg: &AllocConfig) -> Option<(f64, f64, f64)> {
    let mut d: Vec<Draw> = draws
        .iter()
        .copied()
        .filter(|d| d.value.is_finite() && d.value > 0.0 && d.weight.is_finite() && d.weight > 0.0)
        .collect();
    if d.is_empty() {
        return None;
    }
    // Equal values are grouped below, so an unstable sort gives the same choice.
    d.sort_unstable_by(|p, q| p.value.total_cmp(&q.value));
    let top = d[d.len() - 1].value;
    let penalty = cfg.failure_cost.max(0.0) * weighted_median(&d);
    let step = cfg.retry_min_step.max(1.01);
    let total_w: f64 = d.iter().map(|q| q.weight).sum();
    let total_wy: f64 = d.iter().map(|q| q.weight * q.value).sum();
    let mut best = (top, f64::INFINITY);
    let (mut w_le, mut wy_le) = (0.0, 0.0);
    let mut i = 0;
    while i < d.len() {
        let a = d[i].value;
        // Every draw equal to `a` fits under it.
        while i < d.len() && d[i].value == a {
            w_le += d[i].weight;
            wy_le += d[i].weight * d[i].value;
            i += 1;
        }
        let (w_gt, wy_gt) = (total_w - w_le, total_wy - wy_le);
        let retry = if a < top { top.max(a * step) } else { a };
        let c = (a * w_le - wy_le) + (a + penalty + retry) * w_gt - wy_gt;
        if c < best.1 {
            best = (a, c);
        }
    }
    Some((best.0, top, penalty))
}

/// The draw minimising the expected cost over the draws (with retries).
pub fn cost_aware_choice(draws: &[Draw], cfg: &AllocConfig) -> Option<f64> {
    choose(draws, cfg).map(|c| c.0)
}

/// Simulated cost of the allocation the draws lead to, for a task whose peak is `y`.
fn simulated_cost(draws: &[Draw], y: f64, cfg: &AllocConfig) -> f64 {
    match choose(draws, cfg) {
        Some((a, top, penalty)) => {
            let a = a * cfg.margin.max(0.0);
            attempt_cost(a, y, top.max(a), penalty, cfg)
        }
        None => y,
    }
}

fn finite_positive(v: f64, fallback: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        fallback
    }
}

/// First allocation for a task of sizes `x` (input) and `x2` (numeric argument).
pub fn first_allocation(hist: &TaskHistory, x: f64, x2: f64, cfg: &AllocConfig) -> f64 {
    let cold = finite_positive(cfg.cold_start_bytes, 4e9);
    let draws = hist.draws(x, x2, cfg);
    match cost_aware_choice(&draws, cfg) {
        Some(a) => finite_positive(a * cfg.margin, cold),
        None => cold,
    }
}

/// Next allocation after attempt `attempt` (1-based) was killed at `failed_at` bytes:
/// the top of the draws (at least `retry_min_step`× the failed cap), or geometric growth
/// once the cap is above every draw. Always > `failed_at` and finite.
pub fn retry_allocation(
    hist: &TaskHistory,
    x: f64,
    x2: f64,
    failed_at: f64,
    attempt: u32,
    cfg: &AllocConfig,
) -> f64 {
    let failed = finite_positive(failed_at, finite_positive(cfg.cold_start_bytes, 4e9) / 2.0);
    let draws = hist.draws(x, x2, cfg);
    retry_over_draws(&draws, failed, attempt, cfg)
}

/// The retry rule over any predictive draws (the engine's one rule, whatever the evidence):
/// after attempt `attempt` was killed at `failed`, the top of the draws if that is at least
/// `retry_min_step` × the failed cap, else geometric growth. Always > `failed`, finite.
pub fn retry_over_draws(draws: &[Draw], failed: f64, attempt: u32, cfg: &AllocConfig) -> f64 {
    let top = draws.iter().map(|d| d.value).fold(0.0, f64::max);
    let next = retry_from(top, failed, attempt, cfg);
    if next > failed {
        next
    } else {
        failed * 2.0
    }
}

#[cfg(test)]
mod tests;
