//! Feature extraction and end-to-end prediction on a 2,000-line script.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use presize::features::{self, Catalog, FeatureRequest, Language, PriorRuns, ScanOptions};
use presize::model::Predictor;
use presize::policy::{self, Policy};

mod common;

fn bench(c: &mut Criterion) {
    let src = common::python_script(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("analysis.py");
    std::fs::write(&path, &src).expect("write script");
    let catalog = Catalog::builtin();
    let opts = ScanOptions::default();
    let predictor = Predictor::prior_only();
    let prior = PriorRuns::default();
    let inputs = Vec::new();
    let command = vec![path.clone().into_os_string()];

    c.bench_function("scan_source/python_2000_lines", |b| {
        b.iter(|| features::scan_source(black_box(src.as_bytes()), Language::Python, &catalog))
    });
    c.bench_function("extract/python_2000_lines_from_file", |b| {
        let req = FeatureRequest {
            script: Some(&path),
            runtime: None,
            inputs: &inputs,
            command: &command,
            prior: &prior,
        };
        b.iter(|| features::extract(black_box(&req), &catalog, &opts).expect("extract"))
    });
    c.bench_function("predict/end_to_end_2000_lines", |b| {
        let req = FeatureRequest {
            script: Some(&path),
            runtime: None,
            inputs: &inputs,
            command: &command,
            prior: &prior,
        };
        let pol = Policy::default();
        b.iter(|| {
            let x = features::extract(black_box(&req), &catalog, &opts).expect("extract");
            let p = predictor.predict(&x.vector);
            policy::decide(&p, &pol, 16_000, false)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
