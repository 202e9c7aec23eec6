//! Model benchmarks: training 3 targets on 100,000 × 32 synthetic rows, predicting one
//! job with the 3 trained models, and replaying each nf-core trace.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{Array1, Array2};
use presize::features::{Catalog, FeatureVector, Schema};
use presize::job::Outcome;
use presize::model::gbt::GbtParams;
use presize::model::trained::{TrainConfig, TrainedModel, TrainingRow};
use presize::replay;

fn splitmix(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// 100k × 32 features, three log-scale targets with interactions and noise.
fn synthetic(n: usize, d: usize) -> (Array2<f64>, [Array1<f64>; 3]) {
    let x = Array2::from_shape_fn((n, d), |(i, j)| splitmix((i * d + j) as u64) * 10.0);
    let mk = |k: u64| {
        Array1::from_shape_fn(n, |i| {
            let r = x.row(i);
            (r[0] * 0.3 + (r[1] * r[2]).sqrt() + if r[3] > 5.0 { 2.0 } else { 0.0 })
                * (1.0 + k as f64 * 0.1)
                + splitmix(1_000_000 * k + i as u64) * 0.5
        })
    };
    let ys = [mk(1), mk(2), mk(3)];
    (x, ys)
}

fn bench(c: &mut Criterion) {
    let (x, ys) = synthetic(100_000, 32);
    let params = GbtParams::new()
        .n_trees(200)
        .learning_rate(0.1)
        .max_depth(6)
        .max_leaves(31);
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(40));
    g.bench_function("gbt_3_targets_100k_x_32_200_trees", |b| {
        b.iter(|| {
            for y in &ys {
                let p = linfa::ParamGuard::check(params).expect("params");
                black_box(p.fit_weighted(x.view(), y.view(), None).expect("fit"));
            }
        })
    });
    g.finish();

    // A trained presize model (3 targets) over the real feature schema.
    let schema = Arc::new(Schema::for_catalog(&Catalog::builtin()));
    let rows: Vec<TrainingRow> = (0..2000)
        .map(|i| {
            let mut f = BTreeMap::new();
            f.insert("lang_python".into(), 1.0);
            f.insert("input_total_mb".into(), 1.0 + (i % 100) as f64);
            f.insert("lib_pandas_imported".into(), (i % 2) as f64);
            f.insert("tokens".into(), 500.0 + (i % 37) as f64);
            TrainingRow {
                id: i as i64,
                features: FeatureVector::from_map(schema.clone(), &f).values,
                outcome: Outcome::Ok,
                cpu_s: Some(1.0 + (i % 100) as f64 * 0.1),
                rss_mb: Some(50.0 + (i % 100) as f64 * 3.0 + splitmix(i as u64) * 10.0),
                wall_s: Some(1.0 + (i % 100) as f64 * 0.2),
                memory_cap_mb: None,
                timeout_s: None,
            }
        })
        .collect();
    let model = TrainedModel::train(
        &rows,
        &schema,
        &TrainConfig::default(),
        "bench".into(),
        &mut |_| {},
    )
    .expect("train");
    let fv = FeatureVector {
        schema: schema.clone(),
        values: rows[7].features.clone(),
    };
    c.bench_function("predict/3_trained_models_one_job", |b| {
        b.iter(|| model.predict(black_box(&fv)).expect("predict"))
    });

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nfcore-traces");
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    for w in ["eager", "methylseq", "rnaseq"] {
        let path = dir.join(format!("trace_{w}.csv"));
        g.bench_function(w, |b| {
            b.iter(|| {
                replay::replay_files(
                    std::slice::from_ref(&path),
                    &presize::Policy::default(),
                    &mut |_, _| {},
                )
                .expect("replay")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
