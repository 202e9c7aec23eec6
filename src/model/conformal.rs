//! Split-conformal calibration and the regression metrics shared by `retrain` and `stats`.
//!
//! Conformal bounds are computed on *log* residuals `r = ln(actual) - ln(predicted)` (or the
//! same with `ln_1p`; the helpers do not care which, they only see residuals). The finite-sample
//! corrected quantile of `n` calibration residuals at coverage `q` is the `k`-th smallest with
//! `k = ⌈(n+1)·q⌉`; when `k > n` there are too few residuals for that coverage and the helpers
//! return `None`. Under exchangeability `P(new residual <= that quantile) >= q`.
//!
//! Metric conventions: every metric returns `None` (or `NaN` for [`pinball_loss`], whose
//! signature is a plain `f64`) for empty input or when `actual` and `predicted` differ in length.
//! Percentage errors skip rows whose actual value is zero (the APE is undefined there); if no
//! row is left they return `None`. Non-finite inputs are not filtered: they propagate as usual.

use serde::{Deserialize, Serialize};

/// `k = ⌈(n+1)·p⌉`, computed with a tiny tolerance so that e.g. `(19+1)·0.95` is 19, not 20.
fn corrected_rank(n: usize, p: f64) -> usize {
    let k = ((n as f64 + 1.0) * p - 1e-9).ceil();
    if k < 1.0 {
        1
    } else {
        k as usize
    }
}

fn sorted(values: &[f64]) -> Option<Vec<f64>> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    Some(v)
}

/// The split-conformal quantile: the `⌈(n+1)·coverage⌉`-th smallest residual.
///
/// `None` when `residuals` is empty, contains NaN, `coverage` is not in (0, 1), or
/// `⌈(n+1)·coverage⌉ > n` (too few residuals for that coverage).
pub fn conformal_quantile(residuals: &[f64], coverage: f64) -> Option<f64> {
    if residuals.is_empty() || !(coverage > 0.0 && coverage < 1.0) {
        return None;
    }
    let k = corrected_rank(residuals.len(), coverage);
    if k > residuals.len() {
        return None;
    }
    sorted(residuals).map(|v| v[k - 1])
}

/// A one-sided upper bound on log scale: `upper = exp(pred_log + offset)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogUpper {
    /// The conformal quantile of the calibration log residuals.
    pub offset: f64,
    /// The nominal coverage it was calibrated for.
    pub coverage: f64,
    /// Number of calibration residuals.
    pub n: usize,
}

impl LogUpper {
    /// Calibrate from log residuals `ln(actual) - ln(pred)`; `None` as for [`conformal_quantile`].
    pub fn calibrate(log_residuals: &[f64], coverage: f64) -> Option<Self> {
        conformal_quantile(log_residuals, coverage).map(|offset| LogUpper {
            offset,
            coverage,
            n: log_residuals.len(),
        })
    }

    /// The bound on log scale.
    pub fn upper_log(&self, pred_log: f64) -> f64 {
        pred_log + self.offset
    }

    /// The bound on the original scale, `exp(pred_log + offset)`.
    pub fn upper(&self, pred_log: f64) -> f64 {
        self.upper_log(pred_log).exp()
    }
}

/// A two-sided, equal-tailed interval on log scale: `[exp(pred_log + lower), exp(pred_log + upper)]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogInterval {
    /// Lower log offset: the `⌊(n+1)·(1-coverage)/2⌋`-th smallest residual.
    pub lower: f64,
    /// Upper log offset: the `⌈(n+1)·(1-(1-coverage)/2)⌉`-th smallest residual.
    pub upper: f64,
    /// The nominal (total) coverage.
    pub coverage: f64,
    /// Number of calibration residuals.
    pub n: usize,
}

impl LogInterval {
    /// Calibrate each tail at `(1-coverage)/2`. `None` when either rank falls outside `1..=n`
    /// (too few residuals), on empty input, NaN, or coverage not in (0, 1).
    pub fn calibrate(log_residuals: &[f64], coverage: f64) -> Option<Self> {
        if !(coverage > 0.0 && coverage < 1.0) {
            return None;
        }
        let n = log_residuals.len();
        let tail = (1.0 - coverage) / 2.0;
        let hi = corrected_rank(n, 1.0 - tail);
        let lo = ((n as f64 + 1.0) * tail + 1e-9).floor() as usize;
        if n == 0 || hi > n || lo < 1 {
            return None;
        }
        let v = sorted(log_residuals)?;
        Some(LogInterval {
            lower: v[lo - 1],
            upper: v[hi - 1],
            coverage,
            n,
        })
    }

    /// `(lower, upper)` on log scale.
    pub fn bounds_log(&self, pred_log: f64) -> (f64, f64) {
        (pred_log + self.lower, pred_log + self.upper)
    }

    /// `(lower, upper)` on the original scale.
    pub fn bounds(&self, pred_log: f64) -> (f64, f64) {
        let (lo, hi) = self.bounds_log(pred_log);
        (lo.exp(), hi.exp())
    }
}

fn paired(actual: &[f64], predicted: &[f64]) -> bool {
    !actual.is_empty() && actual.len() == predicted.len()
}

/// Mean pinball (quantile) loss of predictions `q` for targets `y` at quantile `alpha`:
/// `mean(max(alpha·(y-q), (alpha-1)·(y-q)))`. `NaN` for empty or mismatched input.
pub fn pinball_loss(y: &[f64], q: &[f64], alpha: f64) -> f64 {
    if !paired(y, q) {
        return f64::NAN;
    }
    let sum: f64 = y
        .iter()
        .zip(q)
        .map(|(&y, &q)| {
            let d = y - q;
            if d >= 0.0 {
                alpha * d
            } else {
                (alpha - 1.0) * d
            }
        })
        .sum();
    sum / y.len() as f64
}

fn apes(actual: &[f64], predicted: &[f64]) -> Option<Vec<f64>> {
    if !paired(actual, predicted) {
        return None;
    }
    let v: Vec<f64> = actual
        .iter()
        .zip(predicted)
        .filter(|(&a, _)| a != 0.0)
        .map(|(&a, &p)| ((a - p) / a).abs())
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Mean absolute percentage error as a fraction (0.1 = 10 %), skipping zero actuals.
pub fn mape(actual: &[f64], predicted: &[f64]) -> Option<f64> {
    apes(actual, predicted).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// Median absolute percentage error as a fraction, skipping zero actuals; the mean of the two
/// middle values for an even count.
pub fn median_ape(actual: &[f64], predicted: &[f64]) -> Option<f64> {
    let mut v = apes(actual, predicted)?;
    v.sort_unstable_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Coefficient of determination `1 - SS_res/SS_tot`. For constant `actual` (`SS_tot = 0`) it is
/// 1.0 for a perfect prediction and 0.0 otherwise (scikit-learn's convention).
pub fn r2(actual: &[f64], predicted: &[f64]) -> Option<f64> {
    if !paired(actual, predicted) {
        return None;
    }
    let mean = actual.iter().sum::<f64>() / actual.len() as f64;
    let ss_tot: f64 = actual.iter().map(|a| (a - mean) * (a - mean)).sum();
    let ss_res: f64 = actual
        .iter()
        .zip(predicted)
        .map(|(a, p)| (a - p) * (a - p))
        .sum();
    Some(if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_res == 0.0 {
        1.0
    } else {
        0.0
    })
}

/// Root mean squared error.
pub fn rmse(actual: &[f64], predicted: &[f64]) -> Option<f64> {
    if !paired(actual, predicted) {
        return None;
    }
    let s: f64 = actual
        .iter()
        .zip(predicted)
        .map(|(a, p)| (a - p) * (a - p))
        .sum();
    Some((s / actual.len() as f64).sqrt())
}

/// Fraction of rows with `actual <= upper` (empirical coverage of an upper bound).
pub fn coverage(actual: &[f64], upper: &[f64]) -> Option<f64> {
    if !paired(actual, upper) {
        return None;
    }
    let hit = actual.iter().zip(upper).filter(|(a, u)| a <= u).count();
    Some(hit as f64 / actual.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn conformal_quantile_ranks() {
        // 1..=19 shuffled; n = 19, q = 0.95: k = ceil(20·0.95) = 19 -> the largest, 19.
        let r: Vec<f64> = [
            7, 3, 19, 1, 12, 5, 16, 9, 2, 18, 4, 11, 14, 6, 17, 8, 10, 13, 15,
        ]
        .iter()
        .map(|&v| v as f64)
        .collect();
        assert_eq!(conformal_quantile(&r, 0.95), Some(19.0));
        // q = 0.9: k = ceil(20·0.9) = 18.
        assert_eq!(conformal_quantile(&r, 0.9), Some(18.0));
        // q = 0.5: k = ceil(10) = 10.
        assert_eq!(conformal_quantile(&r, 0.5), Some(10.0));
        // n = 18, q = 0.95: ceil(19·0.95) = ceil(18.05) = 19 > 18 -> None.
        assert_eq!(conformal_quantile(&r[..18], 0.95), None);
        assert_eq!(conformal_quantile(&[], 0.5), None);
        assert_eq!(conformal_quantile(&r, 1.0), None);
        assert_eq!(conformal_quantile(&r, 0.0), None);
        assert_eq!(conformal_quantile(&[1.0, f64::NAN], 0.3), None);
        // n = 3, q = 0.5: ceil(2) = 2 -> the second smallest.
        assert_eq!(conformal_quantile(&[0.3, -0.1, 0.2], 0.5), Some(0.2));
    }

    #[test]
    fn log_upper_and_interval() {
        let r: Vec<f64> = (1..=39).map(|i| i as f64 / 100.0).collect();
        // n = 39, q = 0.9: k = ceil(36) = 36 -> 0.36.
        let u = LogUpper::calibrate(&r, 0.9).unwrap();
        assert!(close(u.offset, 0.36));
        assert!(close(u.upper_log(1.0), 1.36));
        assert!(close(u.upper(0.0), 0.36f64.exp()));
        // Two-sided 90 %: tails 0.05; hi = ceil(40·0.95) = 38, lo = floor(40·0.05) = 2.
        let iv = LogInterval::calibrate(&r, 0.9).unwrap();
        assert!(close(iv.lower, 0.02) && close(iv.upper, 0.38));
        let (lo, hi) = iv.bounds_log(0.0);
        assert!(close(lo, 0.02) && close(hi, 0.38));
        // n = 10, 90 %: lo = floor(11·0.05) = 0 -> too few.
        assert_eq!(LogInterval::calibrate(&r[..10], 0.9), None);
        assert_eq!(LogUpper::calibrate(&[], 0.9), None);
    }

    #[test]
    fn metrics_by_hand() {
        let y = [1.0, 2.0, 4.0, 0.0];
        let p = [1.5, 2.0, 3.0, 1.0];
        // APEs skipping the zero actual: 0.5, 0, 0.25 -> mean 0.25, median 0.25.
        assert!(close(mape(&y, &p).unwrap(), 0.25));
        assert!(close(median_ape(&y, &p).unwrap(), 0.25));
        assert!(close(median_ape(&y[..2], &p[..2]).unwrap(), 0.25));
        assert_eq!(mape(&[0.0], &[1.0]), None);
        assert_eq!(mape(&[], &[]), None);
        assert_eq!(mape(&[1.0], &[]), None);
        // Pinball at 0.9: d = -0.5, 0, 1, -1 -> 0.05, 0, 0.9, 0.1 -> mean 0.2625.
        assert!(close(pinball_loss(&y, &p, 0.9), 0.2625));
        assert!(pinball_loss(&[], &[], 0.5).is_nan());
        // R²: mean 1.75, SS_tot = 0.5625+0.0625+5.0625+3.0625 = 8.75; SS_res = 0.25+0+1+1 = 2.25.
        assert!(close(r2(&y, &p).unwrap(), 1.0 - 2.25 / 8.75));
        assert_eq!(r2(&[2.0, 2.0], &[2.0, 2.0]), Some(1.0));
        assert_eq!(r2(&[2.0, 2.0], &[1.0, 2.0]), Some(0.0));
        assert_eq!(r2(&[], &[]), None);
        assert!(close(rmse(&y, &p).unwrap(), (2.25f64 / 4.0).sqrt()));
        assert_eq!(coverage(&y, &p), Some(0.75));
    }
}
