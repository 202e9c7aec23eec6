//! Quantile helpers of the learner: bin edges for quantising a feature, and the weighted
//! quantile that sets pinball-loss leaves and the initial prediction.

/// Cut points for one feature: midpoints between distinct values at (approximately) equal-count
/// quantiles; at most `max_bins - 1` cuts. `values` is sorted in place.
pub(super) fn bin_edges(values: &mut [f64], max_bins: usize) -> Vec<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new(); // (value, rows <= value)
    for (i, &v) in values.iter().enumerate() {
        match distinct.last_mut() {
            Some(last) if last.0 == v => last.1 = i + 1,
            _ => distinct.push((v, i + 1)),
        }
    }
    let n = values.len();
    let mut cuts = Vec::new();
    let mut last_cut = None;
    for k in 1..max_bins {
        let j = if distinct.len() <= max_bins {
            k - 1
        } else {
            distinct.partition_point(|d| d.1 < k * n / max_bins)
        };
        if j + 1 >= distinct.len() {
            break;
        }
        if last_cut.is_some_and(|l| j <= l) {
            continue;
        }
        last_cut = Some(j);
        let (a, b) = (distinct[j].0, distinct[j + 1].0);
        let m = a / 2.0 + b / 2.0;
        cuts.push(if m >= a && m < b { m } else { a });
    }
    cuts
}

/// Weighted `alpha`-quantile: the smallest value whose cumulative weight reaches `alpha·W`.
/// `vw` is reordered. Uses selection (O(n)) when `weighted` is false.
pub(super) fn weighted_quantile(vw: &mut [(f64, f64)], alpha: f64, weighted: bool) -> f64 {
    if vw.is_empty() {
        return 0.0;
    }
    if !weighted {
        let k = ((alpha * vw.len() as f64).ceil() as usize).clamp(1, vw.len()) - 1;
        return vw
            .select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0))
            .1
             .0;
    }
    vw.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let target = alpha * vw.iter().map(|p| p.1).sum::<f64>();
    let mut cum = 0.0;
    for &(v, w) in vw.iter() {
        cum += w;
        if cum >= target {
            return v;
        }
    }
    vw[vw.len() - 1].0
}
