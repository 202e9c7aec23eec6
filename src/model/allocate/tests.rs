use super::*;

fn obs(x: f64, y: f64) -> Observation {
    Observation {
        x,
        x2: 0.0,
        y,
        runtime: 1.0,
    }
}

fn history(points: &[(f64, f64)], cfg: &AllocConfig) -> TaskHistory {
    let mut h = TaskHistory::new();
    for &(x, y) in points {
        h.push(obs(x, y), cfg);
    }
    h
}

/// Deterministic pseudo-random numbers in [0, 1) for synthetic histories.
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn cold_start_is_the_configured_default() {
    let cfg = AllocConfig::default();
    let h = TaskHistory::new();
    assert_eq!(first_allocation(&h, 1e9, 0.0, &cfg), cfg.cold_start_bytes);
    let r = retry_allocation(&h, 1e9, 0.0, cfg.cold_start_bytes, 1, &cfg);
    assert!(r.is_finite() && r > cfg.cold_start_bytes);
}

#[test]
fn cheap_retries_allow_a_low_first_cap() {
    // Draws 1, 1, 1, 100 with pure wastage: allocating 1 wastes 0 three times and
    // 1 + (100 − 100) once = 1; allocating 100 wastes 3 × 99 = 297.
    let cfg = AllocConfig {
        tail_draws: 0,
        failure_cost: 0.0,
        ..AllocConfig::default()
    };
    let d: Vec<Draw> = [1.0, 1.0, 1.0, 100.0]
        .iter()
        .map(|&v| Draw {
            value: v,
            weight: 1.0,
        })
        .collect();
    assert_eq!(cost_aware_choice(&d, &cfg), Some(1.0));
    // Failing at 50 three times costs 3 × 50 = 150; allocating 100 wastes 50 once.
    let d: Vec<Draw> = [50.0, 100.0, 100.0, 100.0]
        .iter()
        .map(|&v| Draw {
            value: v,
            weight: 1.0,
        })
        .collect();
    assert_eq!(cost_aware_choice(&d, &cfg), Some(100.0));
    assert_eq!(cost_aware_choice(&[], &cfg), None);
}

#[test]
fn constant_peaks_are_covered_with_a_small_margin() {
    let cfg = AllocConfig::default();
    let pts: Vec<(f64, f64)> = (0..20).map(|i| (1e9 * (i + 1) as f64, 5e9)).collect();
    let h = history(&pts, &cfg);
    let a = first_allocation(&h, 3e9, 0.0, &cfg);
    assert!(a >= 5e9, "{a}");
    assert!(a < 5e9 * 1.05, "{a}");
}

#[test]
fn size_dependent_model_wins_on_a_linear_task_and_is_clipped() {
    let cfg = AllocConfig::default();
    let mut seed = 7;
    let pts: Vec<(f64, f64)> = (0..40)
        .map(|_| {
            let x = 1e9 + 9e9 * lcg(&mut seed);
            (x, 2.0 * x * (1.0 + 0.02 * lcg(&mut seed)))
        })
        .collect();
    let h = history(&pts, &cfg);
    assert_ne!(
        h.chosen_model(&cfg),
        ModelKind::Empirical,
        "{:?}",
        h.scores()
    );
    let small = first_allocation(&h, 2e9, 0.0, &cfg);
    let large = first_allocation(&h, 9e9, 0.0, &cfg);
    assert!(small < large / 3.0, "{small} {large}");
    // Never extrapolated past the largest input seen.
    let x_max = pts.iter().map(|p| p.0).fold(0.0, f64::max);
    let beyond = first_allocation(&h, 100.0 * x_max, 0.0, &cfg);
    let at_max = first_allocation(&h, x_max, 0.0, &cfg);
    assert_eq!(beyond, at_max);
}

#[test]
fn retries_grow_monotonically_and_stay_finite() {
    let cfg = AllocConfig::default();
    let mut seed = 42;
    for case in 0..30 {
        let n = 1 + case % 25;
        let pts: Vec<(f64, f64)> = (0..n)
            .map(|_| {
                (
                    1e8 * (1.0 + 100.0 * lcg(&mut seed)),
                    1e8 + 1e10 * lcg(&mut seed),
                )
            })
            .collect();
        let h = history(&pts, &cfg);
        let x = 1e9 * lcg(&mut seed);
        let mut a = first_allocation(&h, x, 0.0, &cfg);
        assert!(a.is_finite() && a > 0.0);
        for attempt in 1..40 {
            let next = retry_allocation(&h, x, 0.0, a, attempt, &cfg);
            assert!(next.is_finite(), "case {case} attempt {attempt}");
            assert!(next > a, "retry {next} not above the failed cap {a}");
            a = next;
            if a == f64::MAX {
                break;
            }
        }
        // A larger failed cap never yields a smaller retry.
        let r1 = retry_allocation(&h, x, 0.0, 1e9, 1, &cfg);
        let r2 = retry_allocation(&h, x, 0.0, 2e9, 1, &cfg);
        assert!(r2 >= r1 && r2 > 2e9);
    }
}

#[test]
fn garbage_inputs_are_ignored_or_sanitised() {
    let cfg = AllocConfig::default();
    let mut h = TaskHistory::new();
    h.push(obs(f64::NAN, 1e9), &cfg);
    h.push(obs(1e9, f64::NAN), &cfg);
    h.push(obs(1e9, -5.0), &cfg);
    h.push(obs(f64::INFINITY, 2e9), &cfg);
    assert_eq!(h.len(), 2);
    for x in [f64::NAN, -1.0, 0.0, f64::INFINITY, 1e12] {
        let a = first_allocation(&h, x, 0.0, &cfg);
        assert!(a.is_finite() && a >= 1e9, "{x} → {a}");
        let r = retry_allocation(&h, x, 0.0, f64::NAN, 1, &cfg);
        assert!(r.is_finite() && r > 0.0);
    }
}

#[test]
fn deterministic() {
    let cfg = AllocConfig::default();
    let mut seed = 3;
    let pts: Vec<(f64, f64)> = (0..30)
        .map(|_| (1e9 * lcg(&mut seed), 1e9 * (1.0 + lcg(&mut seed))))
        .collect();
    let a = first_allocation(&history(&pts, &cfg), 5e8, 0.0, &cfg);
    let b = first_allocation(&history(&pts, &cfg), 5e8, 0.0, &cfg);
    assert_eq!(a.to_bits(), b.to_bits());
}

#[test]
fn config_round_trips_and_fills_defaults() {
    // Every field away from its default (a struct literal: a new field must be added here),
    // so a field that serialises wrong, or not at all, comes back different.
    let cfg = AllocConfig {
        models: vec![ModelKind::LinearArg, ModelKind::Empirical],
        min_fit_history: 11,
        min_score_history: 7,
        score_weight: ScoreWeight::Bytes,
        score_decay: 0.93,
        runtime_weighted_draws: true,
        retry_min_step: 1.35,
        retry_beyond_step: 2.7,
        margin: 1.15,
        cold_start_bytes: 1.5e9,
        tail_draws: 9,
        tail_mass: 0.25,
        tail_k: 3,
        tail_min_scale: 0.0125,
        failure_cost: 0.4,
        window: 64,
        extrapolate: 2.5,
    };
    assert_ne!(cfg, AllocConfig::default());
    let json = serde_json::to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let back: AllocConfig = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(back, cfg);
    let partial: AllocConfig =
        serde_json::from_str(r#"{"failure_cost": 0.5}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        partial,
        AllocConfig {
            failure_cost: 0.5,
            ..AllocConfig::default()
        }
    );
}
