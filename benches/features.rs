//! Feature extraction and end-to-end prediction on a 2,000-line script.
//!
//! `predict/end_to_end_2000_lines_trained` is the latency the models issue
//! targets (≤ 50 µs): read + scan the script, size the inputs, build the
//! vector, predict with 3 trained models, decide the limits. It skips the
//! script's sha256 (`ScanOptions::script_sha256 = false`), which only
//! `presize run` records and no feature uses; the `extract/*` pair shows its
//! cost.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use presize::features::{
    self, Catalog, FeatureRequest, FeatureVector, Language, PriorRuns, ScanOptions, Schema,
};
use presize::job::Outcome;
use presize::model::trained::{TrainConfig, TrainedModel, TrainingRow};
use presize::model::{Predictor, Source};
use presize::policy::{Evidences, JobSize, KeyHistory, KeyRun, Policy, Sizer};

mod common;

/// A small trained model (3 targets) over the real feature schema, fitted on
/// rows shaped like the bench script's vector.
fn trained_predictor(catalog: &Catalog) -> Predictor {
    let schema = Arc::new(Schema::for_catalog(catalog));
    let rows: Vec<TrainingRow> = (0..2000)
        .map(|i| {
            let mut f = BTreeMap::new();
            f.insert("lang_python".into(), 1.0);
            f.insert("input_total_mb".into(), 1.0 + (i % 100) as f64);
            f.insert("lib_pandas_imported".into(), (i % 2) as f64);
            f.insert("tokens".into(), 20_000.0 + (i % 37) as f64 * 100.0);
            f.insert("code_lines".into(), 1000.0 + (i % 53) as f64 * 20.0);
            TrainingRow {
                id: i as i64,
                features: FeatureVector::from_map(schema.clone(), &f).values,
                outcome: Outcome::Ok,
                cpu_s: Some(1.0 + (i % 100) as f64 * 0.1),
                rss_mb: Some(50.0 + (i % 100) as f64 * 3.0 + (i % 7) as f64),
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
    Predictor::with_model(model)
}

fn bench(c: &mut Criterion) {
    let src = common::python_script(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("analysis.py");
    std::fs::write(&path, &src).expect("write script");
    let catalog = Catalog::builtin();
    let opts = ScanOptions::default();
    let no_sha = ScanOptions {
        script_sha256: false,
        ..ScanOptions::default()
    };
    let prior_only = Predictor::prior_only();
    let trained = trained_predictor(&catalog);
    let prior = PriorRuns::default();
    let inputs = Vec::new();
    let command = vec![path.clone().into_os_string()];
    let req = FeatureRequest {
        script: Some(&path),
        runtime: None,
        inputs: &inputs,
        command: &command,
        prior: &prior,
    };
    let pol = Policy::default();
    // The trained model must accept this vector (else the bench measures the prior).
    let x = features::extract(&req, &catalog, &no_sha).expect("extract");
    let (p, warning) = trained.predict_with_warning(&x.vector);
    assert_eq!(
        p.source,
        Source::Model,
        "trained model refused: {warning:?}"
    );

    c.bench_function("scan_source/python_2000_lines", |b| {
        b.iter(|| features::scan_source(black_box(src.as_bytes()), Language::Python, &catalog))
    });
    c.bench_function("extract/python_2000_lines_from_file", |b| {
        b.iter(|| features::extract(black_box(&req), &catalog, &opts).expect("extract"))
    });
    c.bench_function("extract/python_2000_lines_from_file_no_sha256", |b| {
        b.iter(|| features::extract(black_box(&req), &catalog, &no_sha).expect("extract"))
    });
    // Command-line resource hints: the extra pass over a shell script, beside the scan of
    // the same script (the ratio is the cost `extract` adds for shell jobs).
    let sh = common::shell_pipeline(500);
    let hints = features::hints::from_shell(sh.as_bytes());
    assert!(hints.memory_mb > 0.0 && hints.threads > 0.0, "{hints:?}");
    c.bench_function("scan_source/shell_pipeline_500_lines", |b| {
        b.iter(|| features::scan_source(black_box(sh.as_bytes()), Language::Shell, &catalog))
    });
    c.bench_function("hints/from_shell_pipeline_500_lines", |b| {
        b.iter(|| features::hints::from_shell(black_box(sh.as_bytes())))
    });
    c.bench_function("hints/from_argv_python_job", |b| {
        b.iter(|| features::hints::from_argv(black_box(&command)))
    });
    c.bench_function("predict/3_trained_models_bench_vector", |b| {
        b.iter(|| trained.predict(black_box(&x.vector)))
    });
    // What `runner::plan` does after reading the store: features, the prediction, then the
    // sizing engine (here with an empty key window, as for a key's first run).
    let sizer = Sizer::new(&pol, 16_000);
    let empty = KeyHistory::default();
    let decide = |pred: &presize::Prediction, x: &features::Extracted, novelty: &[String]| {
        sizer.first_limits(
            &Evidences {
                prediction: pred,
                novelty,
                key: &empty,
                size: JobSize::from_features(|k| x.vector.get(k)),
                model_fallback: None,
            },
            false,
        )
    };
    c.bench_function("predict/end_to_end_2000_lines", |b| {
        b.iter(|| {
            let x = features::extract(black_box(&req), &catalog, &opts).expect("extract");
            let p = prior_only.predict(&x.vector);
            decide(&p, &x, &[])
        })
    });
    c.bench_function("predict/end_to_end_2000_lines_trained", |b| {
        b.iter(|| {
            let x = features::extract(black_box(&req), &catalog, &no_sha).expect("extract");
            let p = trained.predict(&x.vector);
            let novelty = trained.novelty(&x.vector, "bench-key");
            decide(&p, &x, &novelty)
        })
    });
    // The engine's per-job work on a full window: rebuild the key's history from the
    // 2 × window runs the store returns (as `runner::plan` does), then decide.
    let runs: Vec<KeyRun> = (0..2 * pol.history_window)
        .map(|i| {
            let arg = 20.0 + ((i * 7919) % 281) as f64;
            KeyRun {
                input_mb: 0.0,
                arg,
                peak_mb: arg * (1.0 + 0.01 * ((i % 7) as f64)) + 10.0,
                wall_s: 1.0 + arg / 100.0,
            }
        })
        .collect();
    let p0 = prior_only.predict(&x.vector);
    c.bench_function("sizing/first_limits_full_window", |b| {
        b.iter(|| {
            let key = KeyHistory::from_runs(black_box(&runs), &sizer.alloc);
            sizer.first_limits(
                &Evidences {
                    prediction: &p0,
                    novelty: &[],
                    key: &key,
                    size: JobSize {
                        input_mb: 0.0,
                        arg: 150.0,
                    },
                    model_fallback: None,
                },
                false,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
