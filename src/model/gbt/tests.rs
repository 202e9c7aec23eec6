use super::binning::bin_edges;
use super::*;
use linfa::traits::Predict;
use linfa::Dataset;
use ndarray::{s, Array2};

/// Deterministic pseudo-random numbers in [0, 1) (Knuth's MMIX LCG, top 53 bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn ds(x: Array2<f64>, y: Vec<f64>) -> Dataset<f64, f64, Ix1> {
    Dataset::new(x, Array1::from(y))
}

fn grid1(n: usize, lo: f64, hi: f64) -> Array2<f64> {
    Array2::from_shape_fn((n, 1), |(i, _)| lo + (hi - lo) * i as f64 / (n - 1) as f64)
}

/// y = x + uniform noise in [-10, 10), x in [0, 100).
fn noisy(n: usize, seed: u64) -> Dataset<f64, f64, Ix1> {
    let mut g = Lcg(seed);
    let x = Array2::from_shape_fn((n, 2), |_| g.next() * 100.0);
    let y = x
        .column(0)
        .iter()
        .map(|v| v + 20.0 * g.next() - 10.0)
        .collect();
    ds(x, y)
}

#[test]
fn learns_a_step_with_few_trees() {
    let x = grid1(1000, 0.0, 10.0);
    let y: Vec<f64> = x
        .iter()
        .map(|&v| if v < 5.0 { 0.0 } else { 10.0 })
        .collect();
    let m = GbtParams::new()
        .n_trees(3)
        .learning_rate(1.0)
        .fit(&ds(x.clone(), y.clone()))
        .unwrap();
    let p = m.predict(&x);
    assert!(p.iter().zip(&y).all(|(p, y)| (p - y).abs() < 0.1));
    assert!((m.predict_row(&[2.0]) - 0.0).abs() < 0.1);
    assert!((m.predict_row(&[7.5]) - 10.0).abs() < 0.1);
}

#[test]
fn linear_fit_is_accurate_and_monotone() {
    let x = grid1(1000, 0.0, 100.0);
    let y: Vec<f64> = x.iter().map(|&v| 3.0 * v + 2.0).collect();
    let m = GbtParams::new()
        .n_trees(200)
        .fit(&ds(x.clone(), y.clone()))
        .unwrap();
    let p = m.predict(&x);
    let r2 = crate::model::conformal::r2(&y, p.as_slice().unwrap()).unwrap();
    assert!(r2 > 0.99, "r2 = {r2}");
    let g: Vec<f64> = (0..=2000)
        .map(|i| m.predict_row(&[i as f64 / 20.0]))
        .collect();
    assert!(g.windows(2).all(|w| w[1] >= w[0]), "not monotone");
}

#[test]
fn quantile_loss_covers_alpha() {
    let d = noisy(3000, 7);
    let m = GbtParams::new().quantile(0.9).n_trees(100).fit(&d).unwrap();
    let p = m.predict(d.records());
    let below = d.targets().iter().zip(&p).filter(|(y, p)| y <= p).count();
    let frac = below as f64 / 3000.0;
    assert!((frac - 0.9).abs() <= 0.03, "coverage {frac}");
    // The 0.9-quantile model sits above the mean model.
    let mean = GbtParams::new().n_trees(100).fit(&d).unwrap();
    assert!(m.predict_row(&[50.0, 50.0]) > mean.predict_row(&[50.0, 50.0]) + 4.0);
}

#[test]
fn sample_weights_are_used() {
    let d = noisy(500, 3);
    // Add outliers at weight 0: the model must equal the one without them.
    let mut x = d.records().clone();
    let mut y = d.targets().to_vec();
    let mut w = vec![1.0f32; 500];
    for i in 0..50 {
        x.push_row(ArrayView1::from(&[i as f64 * 2.0, 1.0]))
            .unwrap();
        y.push(1e6);
        w.push(0.0);
    }
    let p = GbtParams::new().n_trees(30);
    let a = p.fit(&d).unwrap();
    let b = p.fit(&ds(x, y).with_weights(Array1::from(w))).unwrap();
    assert_eq!(a, b);
    // Non-uniform weights move the initial prediction: (0·3 + 10·1) / 4.
    let x = Array2::from_shape_vec((2, 1), vec![0.0, 1.0]).unwrap();
    let m = GbtParams::new()
        .min_samples_leaf(5)
        .fit(&ds(x, vec![0.0, 10.0]).with_weights(Array1::from(vec![3.0, 1.0])))
        .unwrap();
    assert_eq!(m.base_score(), 2.5);
    assert_eq!(m.predict_row(&[0.0]), 2.5);
    // Uniform weight 2 scales gradients and hessians exactly, so squared-loss predictions are
    // bit-identical to the unweighted model (this also exercises the per-bin count path).
    let w2 = d.clone().with_weights(Array1::from(vec![2.0f32; 500]));
    let c = p.l2(0.0).fit(&w2).unwrap();
    let grid = Array2::from_shape_fn((300, 2), |(i, j)| (i * (j + 1)) as f64 / 3.0);
    assert_eq!(a.predict(&grid), c.predict(&grid));
}

#[test]
fn early_stopping_on_noisy_data() {
    let d = noisy(1000, 11);
    let p = GbtParams::new()
        .n_trees(500)
        .learning_rate(0.3)
        .min_samples_leaf(5)
        .validation_fraction(0.2)
        .early_stopping_rounds(10);
    let m = p.fit(&d).unwrap();
    let best = m.best_iteration().unwrap();
    assert!(best > 1 && m.n_trees() == best, "best {best}");
    let vl = m.validation_loss();
    assert_eq!(vl.len(), best + 10);
    assert!(vl.iter().all(|&l| l >= vl[best - 1]));
    // The kept trees are exactly those of a run asked for `best` trees.
    let again = p.n_trees(best).fit(&d).unwrap();
    assert_eq!(again.best_iteration(), Some(best));
    assert_eq!(m.predict(d.records()), again.predict(d.records()));
}

#[test]
fn deterministic_and_json_exact() {
    let d = noisy(2000, 5);
    for p in [
        GbtParams::new(),
        GbtParams::new().quantile(0.7).max_leaves(8),
    ] {
        let a = p.fit(&d).unwrap();
        let b = p.fit(&d).unwrap();
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, serde_json::to_string(&b).unwrap());
        let c: GbtModel = serde_json::from_str(&json).unwrap();
        assert_eq!(a, c);
        let mut g = Lcg(9);
        for _ in 0..1000 {
            let row = [g.next() * 120.0 - 10.0, g.next() * 100.0];
            assert_eq!(a.predict_row(&row).to_bits(), c.predict_row(&row).to_bits());
        }
    }
}

#[test]
fn invalid_params_are_errors() {
    let d = noisy(100, 1);
    let bads = [
        GbtParams::new().learning_rate(0.0),
        GbtParams::new().learning_rate(f64::NAN),
        GbtParams::new().n_trees(0),
        GbtParams::new().max_depth(0),
        GbtParams::new().max_depth(17),
        GbtParams::new().max_leaves(1),
        GbtParams::new().min_samples_leaf(0),
        GbtParams::new().l2(-1.0),
        GbtParams::new().l2(f64::NAN),
        GbtParams::new().min_hessian_leaf(f64::NAN),
        GbtParams::new().min_split_gain(-0.1),
        GbtParams::new().quantile(0.0),
        GbtParams::new().quantile(1.0),
        GbtParams::new().quantile(f64::NAN),
        GbtParams::new().validation_fraction(0.5),
        GbtParams::new().validation_fraction(-0.1),
        GbtParams::new().validation_fraction(f64::NAN),
        GbtParams::new().early_stopping_rounds(0),
        GbtParams::new().max_bins(1),
        GbtParams::new().max_bins(257),
    ];
    for p in bads {
        assert!(
            matches!(p.check_ref(), Err(GbtError::InvalidParam { .. })),
            "{p:?}"
        );
        assert!(p.fit(&d).is_err());
    }
    assert!(GbtParams::new().check().is_ok());
    // Invalid params cannot sneak in through JSON either.
    let mut v = serde_json::to_value(GbtParams::new()).unwrap();
    v["learning_rate"] = serde_json::json!(-1.0);
    assert!(serde_json::from_value::<GbtValidParams>(v.clone()).is_err());
    assert!(serde_json::from_value::<GbtParams>(v).is_ok());
    // Partial configs take defaults; unknown keys are rejected.
    let p: GbtParams =
        serde_json::from_str(r#"{"n_trees": 7, "loss": {"kind": "quantile", "alpha": 0.8}}"#)
            .unwrap();
    assert_eq!(p, GbtParams::new().n_trees(7).quantile(0.8));
    assert!(serde_json::from_str::<GbtParams>(r#"{"n_tree": 7}"#).is_err());
}

#[test]
fn bad_data_is_an_error() {
    let p = GbtParams::new();
    let e = p.fit(&ds(Array2::zeros((0, 2)), vec![]));
    assert!(matches!(e, Err(GbtError::EmptyDataset)));
    let e = p.fit(&ds(Array2::zeros((3, 2)), vec![1.0, 2.0]));
    assert!(matches!(e, Err(GbtError::LengthMismatch { .. })));
    let mut x = Array2::zeros((3, 2));
    x[[1, 1]] = f64::NAN;
    let e = p.fit(&ds(x, vec![1.0, 2.0, 3.0]));
    assert!(matches!(e, Err(GbtError::NonFinite { row: 1, .. })));
    let e = p.fit(&ds(Array2::zeros((2, 1)), vec![1.0, f64::INFINITY]));
    assert!(matches!(e, Err(GbtError::NonFinite { row: 1, .. })));
    let d = || ds(Array2::zeros((2, 1)), vec![1.0, 2.0]);
    let e = p.fit(&d().with_weights(Array1::from(vec![1.0])));
    assert!(matches!(e, Err(GbtError::LengthMismatch { .. })));
    let e = p.fit(&d().with_weights(Array1::from(vec![1.0, -1.0])));
    assert!(matches!(e, Err(GbtError::InvalidWeight { row: 1 })));
    let e = p.fit(&d().with_weights(Array1::from(vec![0.0, 0.0])));
    assert!(matches!(e, Err(GbtError::NoTrainingRows)));
    let e = p
        .validation_fraction(0.4)
        .fit(&d().with_weights(Array1::from(vec![1.0, 0.0])));
    assert!(matches!(e, Err(GbtError::ZeroValidationWeight)));
    // One row, no features: a constant model.
    let m = p.fit(&ds(Array2::zeros((1, 0)), vec![4.0])).unwrap();
    assert_eq!(m.predict_row(&[]), 4.0);
    let back: GbtModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn prediction_edge_cases() {
    let x = grid1(100, 0.0, 10.0);
    let y: Vec<f64> = x.iter().map(|&v| v * v).collect();
    let m = GbtParams::new().min_samples_leaf(2).fit(&ds(x, y)).unwrap();
    assert!(m.predict_row(&[1.0, 2.0]).is_nan());
    assert!(m.try_predict_row(&[]).is_err());
    // NaN goes left at every split, like the smallest value.
    assert_eq!(m.predict_row(&[f64::NAN]), m.predict_row(&[-1e300]));
    // Non-contiguous rows and a wrong column count.
    let x2 = Array2::from_shape_fn((5, 2), |(i, j)| (i * 2 + j) as f64);
    let v = x2.slice(s![.., 1..2]);
    let p = m.predict(&v);
    for (i, p) in p.iter().enumerate() {
        assert_eq!(*p, m.predict_row(&[(i * 2 + 1) as f64]));
    }
    assert!(m.predict(&x2).iter().all(|p| p.is_nan()));
}

#[test]
fn corrupt_model_files_are_rejected() {
    let x = grid1(200, 0.0, 10.0);
    let y: Vec<f64> = x.iter().map(|&v| v.sin()).collect();
    let m = GbtParams::new().min_samples_leaf(5).fit(&ds(x, y)).unwrap();
    let good = serde_json::to_value(&m).unwrap();
    let right0 = good["trees"][0]["right"][0].clone();
    let edits: [(&str, serde_json::Value); 6] = [
        ("/trees/0/left/1", serde_json::json!(0)),
        ("/trees/0/left/0", right0), // two parents
        ("/trees/0/threshold/0", serde_json::json!(null)),
        ("/trees/0/feature/0", serde_json::json!(1)),
        ("/trees/0/right/0", serde_json::json!(-1000)),
        ("/format_version", serde_json::json!(99)),
    ];
    for (path, val) in edits {
        let mut v = good.clone();
        *v.pointer_mut(path).unwrap() = val;
        assert!(serde_json::from_value::<GbtModel>(v).is_err(), "{path}");
    }
}

#[test]
fn importance_and_bins() {
    let mut g = Lcg(2);
    let x = Array2::from_shape_fn((500, 3), |(_, j)| if j == 2 { 1.0 } else { g.next() });
    let y = x.column(0).iter().map(|v| 10.0 * v).collect();
    let m = GbtParams::new().fit(&ds(x, y)).unwrap();
    let imp = m.feature_importance();
    assert!(imp[0] > 100.0 * imp[1] && imp[2] == 0.0);
    assert_eq!(bin_edges(&mut [3.0, 1.0, 1.0, 2.0], 256), vec![1.5, 2.5]);
    assert!(bin_edges(&mut [5.0; 10], 256).is_empty());
    let mut v: Vec<f64> = (0..10_000).map(|i| (i % 1000) as f64).collect();
    let e = bin_edges(&mut v, 256);
    assert!(e.len() <= 255 && e.len() > 200 && e.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<GbtModel>();
    ok::<GbtParams>();
    ok::<GbtValidParams>();
    ok::<GbtError>();
}

/// Friedman #1 on 8 features (3 irrelevant) plus LCG noise; the last 20 % are held out.
fn friedman(n: usize) -> (Array2<f64>, Vec<f64>) {
    let mut g = Lcg(42);
    let x = Array2::from_shape_fn((n, 8), |_| g.next());
    let y = x
        .outer_iter()
        .map(|r| {
            let f = 10.0 * (std::f64::consts::PI * r[0] * r[1]).sin()
                + 20.0 * (r[2] - 0.5).powi(2)
                + 10.0 * r[3]
                + 5.0 * r[4];
            f + (g.next() + g.next() + g.next() - 1.5) * 2.0
        })
        .collect();
    (x, y)
}

/// Holdout RMSE printed by this test when the learner was written (1.348885…, identical in
/// debug and release builds). For scale: the noise alone has RMSE 1.0 and predicting the
/// training mean gives ~4.9. A drift beyond ±5 % means the learner's behaviour changed.
const REFERENCE_RMSE: f64 = 1.348885;

#[test]
fn reference_accuracy() {
    let (x, y) = friedman(2000);
    let d = ds(x.slice(s![..1600, ..]).to_owned(), y[..1600].to_vec());
    let m = GbtParams::new()
        .n_trees(300)
        .learning_rate(0.05)
        .max_depth(4)
        .max_leaves(15)
        .min_samples_leaf(10)
        .fit(&d)
        .unwrap();
    let p = m.predict(&x.slice(s![1600.., ..]));
    let rmse = crate::model::conformal::rmse(&y[1600..], p.as_slice().unwrap()).unwrap();
    println!("reference holdout RMSE = {rmse:.6}");
    assert!((rmse / REFERENCE_RMSE - 1.0).abs() <= 0.05, "rmse {rmse}");
}

#[test]
fn lane_histograms_equal_a_plain_sum() {
    // Large node (lanes) and small node (one histogram), low- and high-cardinality features.
    let mut g = Lcg(7);
    let (n, nf) = (10_003, 3);
    let nbins = [2, 5, 256];
    let bins: Vec<u8> = (0..n * nf)
        .map(|i| (g.next() * nbins[i % nf] as f64) as u8)
        .collect();
    let gh: Vec<[f64; 2]> = (0..n).map(|_| [g.next() - 0.5, 1.0]).collect();
    for rows in [(0..n).rev().collect::<Vec<_>>(), (0..100).collect()] {
        let h = super::train::hist_for_test(&bins, nf, &nbins, &rows, &gh);
        let mut want = vec![[[0.0f64; 2]; 256]; nf];
        for &r in &rows {
            for f in 0..nf {
                let e = &mut want[f][bins[r * nf + f] as usize];
                e[0] += gh[r][0];
                e[1] += gh[r][1];
            }
        }
        for f in 0..nf {
            for b in 0..256 {
                let (a, w) = (h[f][b], want[f][b]);
                assert!((a[0] - w[0]).abs() < 1e-9, "f{f} b{b}: {a:?} vs {w:?}");
                assert_eq!(a[1], w[1], "f{f} b{b}: hessian counts are exact");
            }
        }
    }
}

#[test]
fn constant_columns_are_skipped_without_changing_the_model() {
    // Informative columns 0..3 with constant columns around them: same trees, and split
    // features point at the right original columns.
    let n = 6000;
    let mut g = Lcg(11);
    let inf = Array2::from_shape_fn((n, 3), |(_, j)| (g.next() * (2 + 3 * j) as f64).floor());
    let y: Vec<f64> = inf
        .outer_iter()
        .map(|r| r[0] * 5.0 + r[1] * 2.0 - r[2] + g.next())
        .collect();
    let wide = Array2::from_shape_fn((n, 8), |(i, j)| match j {
        1 => inf[[i, 0]],
        4 => inf[[i, 1]],
        6 => inf[[i, 2]],
        7 => 42.0,
        _ => 0.0,
    });
    let p = GbtParams::new().n_trees(20).check().unwrap();
    let narrow_m = p
        .fit_weighted(inf.view(), Array1::from(y.clone()).view(), None)
        .unwrap();
    let mut trees_seen = 0;
    let wide_m = p
        .fit_weighted_with_progress(wide.view(), Array1::from(y).view(), None, &mut |d, t| {
            assert_eq!((d, t), (trees_seen + 1, 20));
            trees_seen = d;
        })
        .unwrap();
    assert_eq!(trees_seen, 20);
    for i in (0..n).step_by(97) {
        let a = narrow_m.predict_row(&[inf[[i, 0]], inf[[i, 1]], inf[[i, 2]]]);
        let b = wide_m.predict_row(wide.row(i).as_slice().unwrap());
        assert_eq!(a.to_bits(), b.to_bits(), "row {i}");
    }
    let imp = wide_m.feature_importance();
    for j in [0, 2, 3, 5, 7] {
        assert_eq!(imp[j], 0.0, "constant column {j} has importance");
    }
    assert!(imp[1] > 0.0 && imp[4] > 0.0);
}
