use super::*;
use crate::features::{Catalog, FeatureVector, Schema};
use std::sync::Arc;

/// Deterministic pseudo-noise in [-1, 1].
fn noise(i: usize) -> f64 {
    // splitmix64
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

fn set(r: &mut TrainingRow, name: &str, v: f64) {
    let i = schema().index_of(name).expect("feature in schema");
    r.features[i] = v;
}

fn row(i: usize, input_mb: f64, pandas: bool, rss: f64, outcome: Outcome) -> TrainingRow {
    let mut f = BTreeMap::new();
    f.insert("lang_python".to_string(), 1.0);
    f.insert("input_total_mb".to_string(), input_mb);
    f.insert("input_total_log_mb".to_string(), (1.0 + input_mb).ln());
    f.insert("lib_pandas_imported".to_string(), pandas as u8 as f64);
    f.insert("tokens".to_string(), 100.0 + (i % 7) as f64);
    TrainingRow {
        id: i as i64,
        features: FeatureVector::from_map(schema(), &f).values,
        outcome,
        cpu_s: Some(0.2 + input_mb * 0.01),
        rss_mb: Some(rss),
        wall_s: Some(0.3 + input_mb * 0.01),
        memory_cap_mb: None,
        timeout_s: None,
    }
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::for_catalog(&Catalog::builtin()))
}

fn vector(s: &Arc<Schema>, r: &TrainingRow) -> FeatureVector {
    FeatureVector {
        schema: s.clone(),
        values: r.features.clone(),
    }
}

fn train(rows: &[TrainingRow]) -> TrainedModel {
    TrainedModel::train(
        rows,
        &schema(),
        &TrainConfig::default(),
        "gbt-test".into(),
        &mut |_| {},
    )
    .expect("train")
}

/// rss = 40 (+90 with pandas) + 3 MB per input MB, ±10 % noise.
fn truth(input: f64, pandas: bool) -> f64 {
    40.0 + if pandas { 90.0 } else { 0.0 } + 3.0 * input
}

fn history(n: usize) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let input = 1.0 + (i * 37 % 100) as f64;
            let pandas = i % 2 == 0;
            let rss = truth(input, pandas) * (1.0 + 0.1 * noise(i));
            row(i, input, pandas, rss, Outcome::Ok)
        })
        .collect()
}

#[test]
fn learns_and_calibrates() {
    let rows = history(400);
    let m = train(&rows);
    let s = schema();
    let test: Vec<TrainingRow> = (1000..1100)
        .map(|i| {
            let input = 1.0 + (i * 13 % 100) as f64;
            let pandas = i % 3 == 0;
            row(i, input, pandas, truth(input, pandas), Outcome::Ok)
        })
        .collect();
    let mut apes = Vec::new();
    let mut covered = 0;
    for r in &test {
        let p = m.predict(&vector(&s, r)).expect("schema matches");
        let y = r.rss_mb.unwrap();
        apes.push((p.peak_rss_mb - y).abs() / y);
        if y <= p.upper.peak_rss_mb {
            covered += 1;
        }
        assert!(p.lower.peak_rss_mb <= p.peak_rss_mb && p.peak_rss_mb <= p.upper.peak_rss_mb);
        assert!(p.confidence > 0.05, "confidence {}", p.confidence);
    }
    let mape = apes.iter().sum::<f64>() / apes.len() as f64;
    assert!(mape < 0.12, "MAPE {mape}");
    assert!(covered >= 90, "coverage {covered}/100");
}

#[test]
fn extrapolates_to_inputs_beyond_the_training_range() {
    let m = train(&history(400));
    let s = schema();
    // Training inputs are 1..100 MB; 150 MB is 1.5× beyond.
    let r = row(0, 150.0, true, 0.0, Outcome::Ok);
    let p = m.predict(&vector(&s, &r)).unwrap();
    let edge = m
        .predict(&vector(&s, &row(0, 100.0, true, 0.0, Outcome::Ok)))
        .unwrap();
    let want = truth(150.0, true); // 580 MB
    assert!(
        p.peak_rss_mb > edge.peak_rss_mb * 1.15,
        "no growth beyond the range: {} vs {}",
        p.peak_rss_mb,
        edge.peak_rss_mb
    );
    assert!(
        (p.peak_rss_mb - want).abs() / want < 0.35,
        "{} vs truth {want}",
        p.peak_rss_mb
    );
    assert!(
        p.upper.peak_rss_mb >= want,
        "cap would OOM: {}",
        p.upper.peak_rss_mb
    );
}

#[test]
fn oom_kills_are_lower_bounds_not_observations() {
    // A heavy job (with pandas, big input) killed again and again at a 100 MB cap: the
    // measured peak (≈ the cap) is not its peak.
    let mut rows = history(300);
    for i in 0..120 {
        let mut r = row(5000 + i, 80.0, true, 99.0, Outcome::OomKilled);
        set(&mut r, "lib_scanpy_imported", 1.0);
        r.memory_cap_mb = Some(100.0);
        rows.insert(i * 2, r);
    }
    let m = train(&rows);
    let s = schema();
    let mut q = row(0, 80.0, true, 0.0, Outcome::Ok);
    set(&mut q, "lib_scanpy_imported", 1.0);
    let p = m.predict(&vector(&s, &q)).unwrap();
    assert!(
        p.peak_rss_mb > 100.0,
        "predicts {} ≤ the killing cap",
        p.peak_rss_mb
    );
    // Censored rows never train the other targets on their truncated values.
    assert_eq!(rows[0].target(0), None);
    assert_eq!(rows[0].target(1), Some(150.0));
}

#[test]
fn file_round_trip_and_schema_refusal() {
    let m = train(&history(200));
    let back = TrainedModel::from_json(&m.to_json()).unwrap();
    assert_eq!(back, m);
    let s = schema();
    let r = row(1, 10.0, true, 0.0, Outcome::Ok);
    assert_eq!(m.predict(&vector(&s, &r)), back.predict(&vector(&s, &r)));
    // A vector of another schema is refused.
    let other = Arc::new(Schema::new("other", 1, vec!["x".into()]));
    let v = FeatureVector::from_map(other, &BTreeMap::new());
    assert!(m.predict(&v).is_err());
    // Corrupt, truncated and future files are errors, not panics.
    let text = m.to_json();
    assert!(TrainedModel::from_json(&text[..text.len() / 2]).is_err());
    assert!(TrainedModel::from_json("{}").is_err());
    let future = text.replacen("\"format_version\":1", "\"format_version\":99", 1);
    assert!(TrainedModel::from_json(&future).unwrap_err().contains("99"));
}
