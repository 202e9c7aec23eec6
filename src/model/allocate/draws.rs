//! Predictive draws per [`ModelKind`]: the empirical peaks, or a size fit (log-log or
//! linear, on the input size or the numeric argument) plus its leave-one-out residuals,
//! and the exponential tail beyond the largest draw.

use super::{AllocConfig, ModelKind, Observation};

/// A weighted predictive draw of the next peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub value: f64,
    pub weight: f64,
}

pub(super) fn clean_x(x: f64) -> f64 {
    if x.is_finite() && x > 1.0 {
        x
    } else {
        1.0
    }
}

/// Ordinary least squares y = a + b·x with leave-one-out residuals; `None` when the fit
/// is degenerate.
struct Ols {
    a: f64,
    b: f64,
    x_min: f64,
    x_max: f64,
    /// Leave-one-out prediction for each point.
    loo_pred: Vec<f64>,
}

fn ols(xs: &[f64], ys: &[f64]) -> Option<Ols> {
    let n = xs.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let my = ys.iter().sum::<f64>() / nf;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if !(sxx.is_finite() && sxx > 1e-12 * (1.0 + mx * mx)) {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let mut loo_pred = Vec::with_capacity(n);
    for (x, y) in xs.iter().zip(ys) {
        let h = 1.0 / nf + (x - mx) * (x - mx) / sxx;
        let e = y - (a + b * x);
        let e_loo = if h < 1.0 - 1e-9 { e / (1.0 - h) } else { e };
        loo_pred.push(y - e_loo);
    }
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !(a.is_finite() && b.is_finite()) {
        return None;
    }
    Some(Ols {
        a,
        b,
        x_min,
        x_max,
        loo_pred,
    })
}

/// Predictive draws of the next peak at sizes `x` (input) and `x2` (numeric argument)
/// under model `m`, with the tail pseudo-draws of [`AllocConfig::tail_draws`].
pub fn model_draws(
    obs: &[Observation],
    m: ModelKind,
    x: f64,
    x2: f64,
    cfg: &AllocConfig,
) -> Vec<Draw> {
    let mut d = base_draws(obs, m, x, x2, cfg);
    add_tail(&mut d, cfg);
    d
}

/// Extend the draws with an exponential tail beyond the largest one.
fn add_tail(d: &mut Vec<Draw>, cfg: &AllocConfig) {
    let m = cfg.tail_draws;
    if m == 0 || d.len() < 2 || cfg.tail_mass.is_nan() || cfg.tail_mass <= 0.0 {
        return;
    }
    // Only the top k + 1 values matter: select them (O(n)), then order those, and take
    // logarithms of those alone (ln is monotone).
    let mut top_vals: Vec<f64> = d.iter().map(|q| q.value).collect();
    let k = cfg.tail_k.clamp(1, top_vals.len() - 1);
    top_vals.select_nth_unstable_by(k, |a, b| b.total_cmp(a));
    top_vals.truncate(k + 1);
    top_vals.sort_unstable_by(|a, b| b.total_cmp(a));
    let logs: Vec<f64> = top_vals.iter().map(|v| v.ln()).collect();
    let hill = logs[..k].iter().map(|l| l - logs[k]).sum::<f64>() / k as f64;
    let scale = hill.max(cfg.tail_min_scale.max(0.0));
    let top = logs[0];
    let mean_w = d.iter().map(|q| q.weight).sum::<f64>() / d.len() as f64;
    let w = mean_w * cfg.tail_mass / m as f64;
    for j in 0..m {
        let p = (j as f64 + 0.5) / m as f64;
        let u = -scale * (1.0 - p).ln();
        let v = (top + u).exp();
        if v.is_finite() {
            d.push(Draw {
                value: v,
                weight: w,
            });
        }
    }
}

/// Where a size fit is evaluated: within the sizes seen, or up to `extrapolate` × the
/// largest (in the fit's own scale: `ln` for log-log).
fn fit_at(x: f64, lo: f64, hi: f64, extrapolate: f64, log: bool) -> f64 {
    let e = if extrapolate.is_finite() && extrapolate > 1.0 {
        extrapolate
    } else {
        1.0
    };
    let top = if log { hi + e.ln() } else { hi * e };
    x.clamp(lo, top.max(lo))
}

fn base_draws(obs: &[Observation], m: ModelKind, x: f64, x2: f64, cfg: &AllocConfig) -> Vec<Draw> {
    let weight = |o: &Observation| {
        if cfg.runtime_weighted_draws {
            o.runtime
        } else {
            1.0
        }
    };
    let empirical = || -> Vec<Draw> {
        obs.iter()
            .map(|o| Draw {
                value: o.y,
                weight: weight(o),
            })
            .collect()
    };
    if obs.len() < cfg.min_fit_history.max(3) {
        return empirical();
    }
    let (cov, x): (fn(&Observation) -> f64, f64) = match m {
        ModelKind::LogLogArg | ModelKind::LinearArg => (|o| o.x2, x2),
        _ => (|o| o.x, x),
    };
    match m {
        ModelKind::Empirical => empirical(),
        ModelKind::LogLog | ModelKind::LogLogArg => {
            let xs: Vec<f64> = obs.iter().map(|o| clean_x(cov(o)).ln()).collect();
            let ys: Vec<f64> = obs.iter().map(|o| o.y.ln()).collect();
            let Some(f) = ols(&xs, &ys) else {
                return empirical();
            };
            // Extrapolate upwards only along a rising fit.
            let e = if f.b > 0.0 { cfg.extrapolate } else { 1.0 };
            let lx = fit_at(clean_x(x).ln(), f.x_min, f.x_max, e, true);
            let centre = f.a + f.b * lx;
            obs.iter()
                .zip(&ys)
                .zip(&f.loo_pred)
                .map(|((o, ly), p)| Draw {
                    value: (centre + (ly - p)).exp(),
                    weight: weight(o),
                })
                .filter(|d| d.value.is_finite() && d.value > 0.0)
                .collect()
        }
        ModelKind::Linear | ModelKind::LinearArg => {
            let xs: Vec<f64> = obs.iter().map(|o| clean_x(cov(o))).collect();
            let ys: Vec<f64> = obs.iter().map(|o| o.y).collect();
            let Some(f) = ols(&xs, &ys) else {
                return empirical();
            };
            let floor = ys.iter().copied().fold(f64::INFINITY, f64::min) * 0.5;
            let e = if f.b > 0.0 { cfg.extrapolate } else { 1.0 };
            let cx = fit_at(clean_x(x), f.x_min, f.x_max, e, false);
            let centre = (f.a + f.b * cx).max(floor);
            obs.iter()
                .zip(&f.loo_pred)
                .map(|(o, p)| Draw {
                    value: centre * (o.y / p.max(floor)),
                    weight: weight(o),
                })
                .filter(|d| d.value.is_finite() && d.value > 0.0)
                .collect()
        }
    }
}
