use super::*;
use crate::model::Bounds;

fn pred(source: Source, rss: f64, wall: f64) -> Prediction {
    Prediction {
        cpu_seconds: wall,
        peak_rss_mb: rss,
        wall_seconds: wall,
        confidence: 0.9,
        upper: Bounds {
            peak_rss_mb: rss * 1.5,
            wall_seconds: wall * 1.5,
            cpu_seconds: wall * 1.5,
        },
        lower: Bounds {
            peak_rss_mb: rss / 2.0,
            wall_seconds: wall / 2.0,
            cpu_seconds: wall / 2.0,
        },
        model_version: "m".into(),
        source,
    }
}

fn key(runs: &[(f64, f64, f64)], policy: &Policy) -> KeyHistory {
    let cfg = alloc_config(policy);
    let runs: Vec<KeyRun> = runs
        .iter()
        .map(|&(arg, peak, wall)| KeyRun {
            input_mb: 0.0,
            arg,
            peak_mb: peak,
            wall_s: wall,
        })
        .collect();
    KeyHistory::from_runs(&runs, &cfg)
}

fn run(d: &Decision) -> (Limits, Sizing) {
    match d {
        Decision::Run {
            applied, sizing, ..
        } => (*applied, sizing.clone()),
        Decision::Reject(r) => panic!("rejected: {}", r.reason),
    }
}

#[test]
fn each_evidence_level_and_its_limits() {
    let p = Policy::default();
    let s = Sizer::new(&p, 100_000);
    let empty = KeyHistory::default();
    let model = pred(Source::Model, 200.0, 100.0);
    // Inside the model's domain, few runs of the key: model level, cost-aware cap
    // between the point and the upper bound, timeout not below the static default.
    let e = Evidences {
        prediction: &model,
        novelty: &[],
        key: &empty,
        size: JobSize::default(),
        model_fallback: None,
    };
    let (l, sz) = run(&s.first_limits(&e, false));
    assert_eq!(sz.evidence, Evidence::Model, "{}", sz.reason);
    assert!(
        l.memory_limit_mb >= 200 && l.memory_limit_mb <= 300,
        "{l:?}"
    );
    assert_eq!(l.timeout_s, p.default_timeout_s);
    // Each novelty cause, no trained model, low confidence and a fallen model: novel,
    // never tighter than the static defaults, and the reason says why.
    let novel = ["heavy library scanpy".to_string()];
    let prior = pred(Source::Prior, 20.0, 1.0);
    let mut low = model.clone();
    low.confidence = 0.0;
    let cases: Vec<(Evidences<'_>, &str)> = vec![
        (
            Evidences {
                novelty: &novel,
                ..e
            },
            "scanpy",
        ),
        (
            Evidences {
                prediction: &prior,
                ..e
            },
            "no trained model",
        ),
        (
            Evidences {
                prediction: &low,
                ..e
            },
            "confidence",
        ),
        (
            Evidences {
                model_fallback: Some("live coverage fell"),
                ..e
            },
            "live coverage",
        ),
    ];
    for (c, why) in cases {
        let (l, sz) = run(&s.first_limits(&c, false));
        assert_eq!(sz.evidence, Evidence::Novel);
        assert!(sz.reason.contains(why), "{}", sz.reason);
        assert!(l.memory_limit_mb >= p.default_memory_mb, "{l:?}");
        assert!(l.timeout_s >= p.default_timeout_s, "{l:?}");
    }
    // A key with steady runs: history level below the static defaults, above the peaks.
    let steady = key(
        &[(0.0, 500.0, 30.0), (0.0, 505.0, 31.0), (0.0, 498.0, 29.0)],
        &p,
    );
    let h = Evidences {
        key: &steady,
        novelty: &novel,
        ..e
    };
    let (l, sz) = run(&s.first_limits(&h, false));
    assert_eq!(sz.evidence, Evidence::History, "{}", sz.reason);
    assert_eq!(sz.memory_source, LimitSource::Predicted);
    assert!(l.memory_limit_mb >= 505 && l.memory_limit_mb < 600, "{l:?}");
    assert!(
        l.timeout_s >= 62 && l.timeout_s < p.default_timeout_s,
        "{l:?}"
    );
    // Dry run: the static defaults apply, the sources say so.
    let (l, sz) = run(&s.first_limits(&h, true));
    assert_eq!(l.memory_limit_mb, p.default_memory_mb);
    assert_eq!(sz.memory_source, LimitSource::DryRun);
}

#[test]
fn size_fit_follows_a_job_larger_than_seen_and_stops_far_beyond() {
    let p = Policy::default();
    let s = Sizer::new(&p, 100_000);
    // Peak = 1.0 × argument + 10, argument 20..300.
    let runs: Vec<(f64, f64, f64)> = (0..30)
        .map(|i| {
            let a = 20.0 + (i * 7919 % 281) as f64;
            (a, a + 10.0, 1.0)
        })
        .collect();
    let k = key(&runs, &p);
    let prior = pred(Source::Prior, 20.0, 1.0);
    let at = |arg: f64| {
        let e = Evidences {
            prediction: &prior,
            novelty: &[],
            key: &k,
            size: JobSize { input_mb: 0.0, arg },
            model_fallback: None,
        };
        run(&s.first_limits(&e, false))
    };
    let (l, sz) = at(390.0);
    assert_eq!(sz.evidence, Evidence::History, "{}", sz.reason);
    assert!(
        l.memory_limit_mb >= 400 && l.memory_limit_mb < 480,
        "{l:?} {}",
        sz.reason
    );
    let (l, sz) = at(150.0);
    assert!(
        l.memory_limit_mb >= 160 && l.memory_limit_mb < 200,
        "{l:?} {}",
        sz.reason
    );
    // Far beyond what the key has run with: not the key's history any more.
    let (l, sz) = at(5_000.0);
    assert_eq!(sz.evidence, Evidence::Novel, "{}", sz.reason);
    assert!(l.memory_limit_mb >= p.default_memory_mb);
}

#[test]
fn live_coverage_fallback_needs_enough_jobs_and_a_real_drop() {
    let p = Policy::default();
    // 73 % over 30 jobs at nominal 95 %: stops tightening, and says why.
    let f = coverage_fallback("m1", 30, 22, 0.95, &p).expect("fallback");
    assert!(f.contains("73 %") && f.contains("m1"), "{f}");
    // Too few jobs to judge, or within 10 points of nominal: keeps tightening.
    assert_eq!(coverage_fallback("m1", 19, 0, 0.95, &p), None);
    assert_eq!(coverage_fallback("m1", 100, 86, 0.95, &p), None);
    assert!(coverage_fallback("m1", 100, 85, 0.95, &p).is_some());
}

#[test]
fn one_retry_rule() {
    let p = Policy::default();
    let s = Sizer::new(&p, 10_000);
    let k = key(
        &[(0.0, 500.0, 30.0), (0.0, 520.0, 31.0), (0.0, 900.0, 29.0)],
        &p,
    );
    let prior = pred(Source::Prior, 20.0, 1.0);
    let e = Evidences {
        prediction: &prior,
        novelty: &[],
        key: &k,
        size: JobSize::default(),
        model_fallback: None,
    };
    let (l, sz) = run(&s.first_limits(&e, false));
    // OOM: next cap above the killed one, at the top of the draws, within the budget.
    let next = s
        .retry_limits(&e, l, &sz, Outcome::OomKilled, 1)
        .expect("retry");
    assert!(next.memory_limit_mb > l.memory_limit_mb && next.memory_limit_mb >= 900);
    assert!(next.memory_limit_mb <= 10_000);
    let at_budget = Limits {
        memory_limit_mb: 10_000,
        ..l
    };
    assert_eq!(
        s.retry_limits(&e, at_budget, &sz, Outcome::OomKilled, 2),
        None
    );
    // A timeout the engine set below the static default: retried at the default.
    let t = s
        .retry_limits(&e, l, &sz, Outcome::TimedOut, 1)
        .expect("timeout retry");
    assert_eq!(t.timeout_s, p.default_timeout_s);
    // A static timeout is not retried (retry_timeouts off), a failure never.
    let st = Sizing {
        timeout_source: LimitSource::Static,
        ..sz.clone()
    };
    assert_eq!(s.retry_limits(&e, l, &st, Outcome::TimedOut, 1), None);
    assert_eq!(s.retry_limits(&e, l, &sz, Outcome::Failed, 1), None);
    // Hostile numbers never overflow.
    let huge = Limits {
        memory_limit_mb: u64::MAX,
        timeout_s: u64::MAX,
        enforced: true,
    };
    assert_eq!(s.retry_limits(&e, huge, &sz, Outcome::OomKilled, 1), None);
    let p2 = Policy {
        retry_timeouts: true,
        ..Policy::default()
    };
    let s2 = Sizer::new(&p2, 10_000);
    assert_eq!(s2.retry_limits(&e, huge, &st, Outcome::TimedOut, 1), None);
}
