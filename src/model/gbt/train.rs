//! Training: quantisation, leaf-wise tree growth on gradient histograms, boosting loop.

use super::binning::{bin_edges, weighted_quantile};
use super::{Config, GbtError, GbtModel, GbtValidParams, Loss, RawNode, Tree, LEAF};
use ndarray::{ArrayView1, ArrayView2};

/// Memory kept for cached per-leaf histograms while growing one tree.
const HIST_BUDGET_BYTES: usize = 256 << 20;

/// Independent partial histograms a large node's rows are spread over (row `k` of the node
/// adds into lane `k % LANES`), merged in lane order afterwards. On presize's own features
/// most columns take two to five values, so consecutive rows add into the same histogram
/// cell and, with one histogram, every add waits for the previous one; with four lanes four
/// such chains run side by side. Deterministic: the same rows give the same sums.
const LANES: usize = 4;
/// Nodes with fewer rows use one histogram (zeroing and merging the lanes would cost more
/// than the chains).
const LANE_MIN_ROWS: usize = 4096;

/// Per feature, per bin: `[sum grad, sum hess]`, plus row counts when the weights are not
/// all 1 (with unit weights the hessian sum *is* the count, exactly).
struct Hist {
    gh: Vec<[[f64; 2]; 256]>,
    n: Vec<[u32; 256]>,
}

#[derive(Clone, Copy)]
struct Split {
    feature: usize,
    bin: usize,
    gain: f64,
    /// `[grad, hess, count]` sums of the left side.
    left: [f64; 3],
}

struct Leaf {
    start: usize,
    end: usize,
    depth: usize,
    tot: [f64; 3],
    hist: Option<Hist>,
    split: Option<Split>,
    /// (node, is_left) whose child pointer refers to this leaf.
    parent: Option<(usize, bool)>,
}

struct Grower<'a> {
    c: &'a Config,
    /// Row-major bins of the *active* (non-constant) features only.
    bins: &'a [u8],
    /// Number of active features; split feature indices below are active indices.
    nf: usize,
    /// Lane histograms for large nodes: `LANES × nf` feature histograms.
    lanes: Vec<[[f64; 2]; 256]>,
    nbins: Vec<usize>,
    /// Cut points per active feature.
    cuts: &'a [Vec<f64>],
    /// Original column of each active feature.
    active: &'a [usize],
    counts: bool,
    idx: Vec<usize>,
    scratch: Vec<usize>,
    pool: Vec<Hist>,
    max_live: usize,
}

impl Grower<'_> {
    fn hist(&mut self, start: usize, end: usize, gh: &[[f64; 2]]) -> Hist {
        let nc = if self.counts { self.nf } else { 0 };
        let mut h = self.pool.pop().unwrap_or_else(|| Hist {
            gh: vec![[[0.0; 2]; 256]; self.nf],
            n: vec![[0; 256]; nc],
        });
        h.gh.iter_mut().for_each(|f| f.fill([0.0; 2]));
        h.n.iter_mut().for_each(|f| f.fill(0));
        let nf = self.nf;
        let rows = &self.idx[start..end];
        if rows.len() < LANE_MIN_ROWS || nf == 0 {
            for &r in rows {
                let [g, hs] = gh[r];
                let row = &self.bins[r * nf..(r + 1) * nf];
                for (hf, &b) in h.gh.iter_mut().zip(row) {
                    let e = &mut hf[b as usize];
                    e[0] += g;
                    e[1] += hs;
                }
            }
        } else {
            if self.lanes.len() != LANES * nf {
                self.lanes = vec![[[0.0; 2]; 256]; LANES * nf];
            }
            for (f, &nb) in self.nbins.iter().enumerate() {
                for lane in 0..LANES {
                    self.lanes[lane * nf + f][..nb].fill([0.0; 2]);
                }
            }
            let mut chunks = rows.chunks_exact(LANES);
            for chunk in &mut chunks {
                for (lane, &r) in chunk.iter().enumerate() {
                    let [g, hs] = gh[r];
                    let row = &self.bins[r * nf..(r + 1) * nf];
                    let lh = &mut self.lanes[lane * nf..(lane + 1) * nf];
                    for (hf, &b) in lh.iter_mut().zip(row) {
                        let e = &mut hf[b as usize];
                        e[0] += g;
                        e[1] += hs;
                    }
                }
            }
            for &r in chunks.remainder() {
                let [g, hs] = gh[r];
                let row = &self.bins[r * nf..(r + 1) * nf];
                for (hf, &b) in self.lanes[..nf].iter_mut().zip(row) {
                    let e = &mut hf[b as usize];
                    e[0] += g;
                    e[1] += hs;
                }
            }
            for (f, &nb) in self.nbins.iter().enumerate() {
                let out = &mut h.gh[f][..nb];
                for lane in 0..LANES {
                    for (o, e) in out.iter_mut().zip(&self.lanes[lane * nf + f][..nb]) {
                        o[0] += e[0];
                        o[1] += e[1];
                    }
                }
            }
        }
        if !h.n.is_empty() {
            for &r in rows {
                let row = &self.bins[r * nf..(r + 1) * nf];
                for (nf, &b) in h.n.iter_mut().zip(row) {
                    nf[b as usize] += 1;
                }
            }
        }
        h
    }

    fn best_split(&self, h: &Hist, tot: [f64; 3]) -> Option<Split> {
        let c = self.c;
        let (l2, msl, mh) = (c.l2, c.min_samples_leaf as f64, c.min_hessian_leaf);
        let score = |g: f64, h: f64| if h + l2 > 0.0 { g * g / (h + l2) } else { 0.0 };
        let parent = score(tot[0], tot[1]);
        let mut best: Option<Split> = None;
        for (f, hf) in h.gh.iter().enumerate() {
            let mut cum = [0.0; 3];
            for (b, e) in hf[..self.nbins[f].saturating_sub(1)].iter().enumerate() {
                let n = h.n.get(f).map_or(e[1], |nf| f64::from(nf[b]));
                cum = [cum[0] + e[0], cum[1] + e[1], cum[2] + n];
                let r = [tot[0] - cum[0], tot[1] - cum[1], tot[2] - cum[2]];
                if r[2] < msl || r[1] < mh {
                    break;
                }
                if cum[2] < msl || cum[1] < mh {
                    continue;
                }
                let gain = score(cum[0], cum[1]) + score(r[0], r[1]) - parent;
                if gain > best.map_or(c.min_split_gain, |s| s.gain) && gain > 0.0 {
                    best = Some(Split {
                        feature: f,
                        bin: b,
                        gain,
                        left: cum,
                    });
                }
            }
        }
        best.filter(|s| s.gain.is_finite())
    }

    fn splittable(&self, l: &Leaf) -> bool {
        l.depth < self.c.max_depth && l.end - l.start >= 2 * self.c.min_samples_leaf
    }

    /// Grows one tree; leaf values are the raw Newton steps `-G/(H+l2)` (unshrunk).
    /// Returns internal nodes (leaf children tagged `LEAF`), leaf values, leaf row ranges.
    #[allow(clippy::type_complexity)]
    fn grow(
        &mut self,
        gh: &[[f64; 2]],
        imp: &mut [f64],
    ) -> (Vec<RawNode>, Vec<f64>, Vec<(usize, usize)>) {
        let n = gh.len();
        self.idx.clear();
        self.idx.extend(0..n);
        let tot = gh
            .iter()
            .fold([0.0; 3], |a, g| [a[0] + g[0], a[1] + g[1], a[2] + 1.0]);
        let mut root = Leaf {
            start: 0,
            end: n,
            depth: 0,
            tot,
            hist: None,
            split: None,
            parent: None,
        };
        if self.splittable(&root) {
            let h = self.hist(0, n, gh);
            root.split = self.best_split(&h, tot);
            root.hist = Some(h);
        }
        let mut leaves = vec![root];
        let mut nodes: Vec<RawNode> = Vec::new();
        while leaves.len() < self.c.max_leaves {
            let mut pick: Option<(usize, Split)> = None;
            for (i, l) in leaves.iter().enumerate() {
                if let Some(s) = l.split {
                    if pick.is_none_or(|(_, p)| s.gain > p.gain) {
                        pick = Some((i, s));
                    }
                }
            }
            let Some((i, s)) = pick else { break };
            let (start, end, depth, tot) = (
                leaves[i].start,
                leaves[i].end,
                leaves[i].depth,
                leaves[i].tot,
            );
            // Stable, branch-free partition of the leaf's rows.
            self.scratch.resize(end - start, 0);
            let (mut nl, mut nr) = (0, 0);
            for k in start..end {
                let r = self.idx[k];
                let left = usize::from(self.bins[r * self.nf + s.feature] as usize <= s.bin);
                self.idx[start + nl] = r;
                self.scratch[nr] = r;
                nl += left;
                nr += 1 - left;
            }
            self.idx[start + nl..end].copy_from_slice(&self.scratch[..nr]);
            imp[self.active[s.feature]] += s.gain;
            let k = nodes.len();
            let j = leaves.len();
            nodes.push(RawNode {
                threshold: self.cuts[s.feature][s.bin],
                feature: self.active[s.feature] as u32,
                left: i as u32 | LEAF,
                right: j as u32 | LEAF,
            });
            if let Some((p, is_left)) = leaves[i].parent {
                if is_left {
                    nodes[p].left = k as u32;
                } else {
                    nodes[p].right = k as u32;
                }
            }
            let parent_hist = leaves[i].hist.take();
            let mk = |start, end, tot, is_left| Leaf {
                start,
                end,
                depth: depth + 1,
                tot,
                hist: None,
                split: None,
                parent: Some((k, is_left)),
            };
            let lt = s.left;
            let rt = [tot[0] - lt[0], tot[1] - lt[1], tot[2] - lt[2]];
            let mut left = mk(start, start + nl, lt, true);
            let mut right = mk(start + nl, end, rt, false);
            let (sl, sr) = (self.splittable(&left), self.splittable(&right));
            if j + 1 < self.c.max_leaves && (sl || sr) {
                let left_small = nl <= nr;
                let (small, large) = if left_small {
                    (&mut left, &mut right)
                } else {
                    (&mut right, &mut left)
                };
                let hs = self.hist(small.start, small.end, gh);
                let hl = match parent_hist {
                    Some(mut p) => {
                        for (pf, sf) in p.gh.iter_mut().zip(&hs.gh) {
                            for (pe, se) in pf.iter_mut().zip(sf) {
                                *pe = [pe[0] - se[0], pe[1] - se[1]];
                            }
                        }
                        for (pf, sf) in p.n.iter_mut().zip(&hs.n) {
                            pf.iter_mut().zip(sf).for_each(|(pe, se)| *pe -= se);
                        }
                        p
                    }
                    None => self.hist(large.start, large.end, gh),
                };
                let (ok_s, ok_l) = if left_small { (sl, sr) } else { (sr, sl) };
                let mut live = leaves.iter().filter(|l| l.hist.is_some()).count();
                for (leaf, h, ok) in [(small, hs, ok_s), (large, hl, ok_l)] {
                    if ok {
                        leaf.split = self.best_split(&h, leaf.tot);
                    }
                    if ok && leaf.split.is_some() && live < self.max_live {
                        live += 1;
                        leaf.hist = Some(h);
                    } else {
                        self.pool.push(h);
                    }
                }
            } else if let Some(p) = parent_hist {
                self.pool.push(p);
            }
            leaves[i] = left;
            leaves.push(right);
        }
        let (l2, mut ranges, mut values) = (self.c.l2, Vec::new(), Vec::new());
        for l in leaves {
            if let Some(h) = l.hist {
                self.pool.push(h);
            }
            let d = l.tot[1] + l2;
            values.push(if d > 0.0 { -l.tot[0] / d } else { 0.0 });
            ranges.push((l.start, l.end));
        }
        (nodes, values, ranges)
    }
}

/// Fit; `progress(trees_done, n_trees)` is called after each tree.
pub(super) fn train(
    params: &GbtValidParams,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    w: Option<ArrayView1<f64>>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GbtModel, GbtError> {
    let c = &params.0;
    let (n, nf) = x.dim();
    if n == 0 {
        return Err(GbtError::EmptyDataset);
    }
    let mismatch = |what, got| GbtError::LengthMismatch {
        what,
        expected: n,
        got,
    };
    if y.len() != n {
        return Err(mismatch("targets", y.len()));
    }
    let weight = |i: usize| w.as_ref().map_or(1.0, |w| w[i]);
    if let Some(w) = &w {
        if w.len() != n {
            return Err(mismatch("weights", w.len()));
        }
        if let Some(row) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(GbtError::InvalidWeight { row });
        }
    }
    for (row, (xr, yv)) in x.outer_iter().zip(y.iter()).enumerate() {
        if !yv.is_finite() {
            return Err(GbtError::NonFinite {
                what: "target",
                row,
            });
        }
        if xr.iter().any(|v| !v.is_finite()) {
            return Err(GbtError::NonFinite {
                what: "feature value",
                row,
            });
        }
    }
    let n_val = if c.validation_fraction > 0.0 {
        ((n as f64 * c.validation_fraction).floor() as usize).max(1)
    } else {
        0
    };
    let n_tr = n.saturating_sub(n_val);
    let rows: Vec<usize> = (0..n_tr).filter(|&i| weight(i) > 0.0).collect();
    let m = rows.len();
    if m == 0 {
        return Err(GbtError::NoTrainingRows);
    }
    let val: Vec<usize> = (n_tr..n).collect();
    let val_w_sum: f64 = val.iter().map(|&i| weight(i)).sum();
    if n_val > 0 && val_w_sum <= 0.0 {
        return Err(GbtError::ZeroValidationWeight);
    }

    // Quantise. A feature with one value among the training rows has no cut and can never
    // split, so it is left out of the bin matrix and the histograms (on a real presize
    // history most of the 80 features are constant); `active` maps back to the columns.
    let mut cuts = Vec::with_capacity(nf);
    let mut active = Vec::with_capacity(nf);
    let mut col = vec![0.0; m];
    let mut sorted = vec![0.0; m];
    let mut col_bins: Vec<Vec<u8>> = Vec::new();
    for f in 0..nf {
        for (v, &r) in col.iter_mut().zip(&rows) {
            *v = x[[r, f]];
        }
        sorted.copy_from_slice(&col);
        let cf = bin_edges(&mut sorted, c.max_bins);
        if cf.is_empty() {
            continue;
        }
        col_bins.push(
            col.iter()
                .map(|v| cf.partition_point(|t| t < v) as u8)
                .collect(),
        );
        cuts.push(cf);
        active.push(f);
    }
    let na = active.len();
    let mut bins = vec![0u8; m * na];
    for (j, cb) in col_bins.iter().enumerate() {
        for (k, &b) in cb.iter().enumerate() {
            bins[k * na + j] = b;
        }
    }
    drop(col_bins);

    let yt: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
    let wt: Vec<f64> = rows.iter().map(|&r| weight(r)).collect();
    let weighted = wt.iter().any(|&v| v != wt[0]);
    let base = match c.loss {
        Loss::Squared => {
            yt.iter().zip(&wt).map(|(y, w)| y * w).sum::<f64>() / wt.iter().sum::<f64>()
        }
        Loss::Quantile { alpha } => {
            let mut vw: Vec<(f64, f64)> = yt.iter().copied().zip(wt.iter().copied()).collect();
            weighted_quantile(&mut vw, alpha, weighted)
        }
    };
    if !base.is_finite() {
        return Err(GbtError::Diverged);
    }
    let loss_of = |yv: f64, p: f64| match c.loss {
        Loss::Squared => (yv - p) * (yv - p),
        Loss::Quantile { alpha } => {
            let d = yv - p;
            if d >= 0.0 {
                alpha * d
            } else {
                (alpha - 1.0) * d
            }
        }
    };

    let hist_bytes = (na * 256 * 20).max(1);
    let mut grower = Grower {
        c,
        bins: &bins,
        nf: na,
        lanes: Vec::new(),
        nbins: cuts.iter().map(|c| c.len() + 1).collect(),
        cuts: &cuts,
        active: &active,
        counts: wt.iter().any(|&v| v != 1.0),
        idx: Vec::with_capacity(m),
        scratch: Vec::with_capacity(m),
        pool: Vec::new(),
        max_live: (HIST_BUDGET_BYTES / hist_bytes).max(2),
    };
    let mut pred = vec![base; m];
    let mut gh = vec![[0.0; 2]; m];
    let mut val_pred = vec![base; val.len()];
    let mut val_row = vec![0.0; nf];
    let mut trees = Vec::new();
    let mut tree_imp: Vec<Vec<f64>> = Vec::new();
    let mut val_loss = Vec::new();
    let mut best = (f64::INFINITY, 0usize);
    let mut vw = Vec::new();
    for t in 0..c.n_trees {
        for ((g, &p), (&yv, &wv)) in gh.iter_mut().zip(&pred).zip(yt.iter().zip(&wt)) {
            *g = match c.loss {
                Loss::Squared => [wv * (p - yv), wv],
                Loss::Quantile { alpha } => [wv * if p >= yv { 1.0 - alpha } else { -alpha }, wv],
            };
        }
        let mut imp = vec![0.0; nf];
        let (nodes, mut values, ranges) = grower.grow(&gh, &mut imp);
        for (v, &(s, e)) in values.iter_mut().zip(&ranges) {
            if let Loss::Quantile { alpha } = c.loss {
                vw.clear();
                vw.extend(grower.idx[s..e].iter().map(|&r| (yt[r] - pred[r], wt[r])));
                *v = weighted_quantile(&mut vw, alpha, weighted);
            }
            *v *= c.learning_rate;
            if !v.is_finite() {
                return Err(GbtError::Diverged);
            }
            for &r in &grower.idx[s..e] {
                pred[r] += *v;
            }
        }
        trees.push(Tree::assemble(&nodes, &values));
        tree_imp.push(imp);
        progress(t + 1, c.n_trees);
        if n_val > 0 {
            let tree = &trees[t];
            let mut sum = 0.0;
            for (p, &i) in val_pred.iter_mut().zip(&val) {
                val_row.iter_mut().zip(x.row(i)).for_each(|(d, s)| *d = *s);
                *p += tree.predict(&val_row);
                sum += weight(i) * loss_of(y[i], *p);
            }
            let l = sum / val_w_sum;
            val_loss.push(l);
            if l < best.0 {
                best = (l, t + 1);
            } else if t + 1 - best.1 >= c.early_stopping_rounds {
                break;
            }
        }
    }
    let best_iteration = (n_val > 0).then_some(best.1.max(1));
    if let Some(b) = best_iteration {
        trees.truncate(b);
    }
    let mut importance = vec![0.0; nf];
    for imp in tree_imp.iter().take(trees.len()) {
        importance.iter_mut().zip(imp).for_each(|(a, b)| *a += b);
    }
    Ok(GbtModel {
        n_features: nf,
        params: *params,
        base_score: base,
        trees,
        best_iteration,
        validation_loss: val_loss,
        importance,
    })
}

/// The per-feature `[sum grad, sum hess]` histogram of `rows` as [`Grower::hist`] builds it
/// (lanes for large row sets), for tests against a plain sum.
#[cfg(test)]
pub(super) fn hist_for_test(
    bins: &[u8],
    nf: usize,
    nbins: &[usize],
    rows: &[usize],
    gh: &[[f64; 2]],
) -> Vec<[[f64; 2]; 256]> {
    let c = Config::default();
    let cuts = vec![Vec::new(); nf];
    let active: Vec<usize> = (0..nf).collect();
    let mut g = Grower {
        c: &c,
        bins,
        nf,
        lanes: Vec::new(),
        nbins: nbins.to_vec(),
        cuts: &cuts,
        active: &active,
        counts: false,
        idx: rows.to_vec(),
        scratch: Vec::new(),
        pool: Vec::new(),
        max_live: 2,
    };
    g.hist(0, rows.len(), gh).gh
}
