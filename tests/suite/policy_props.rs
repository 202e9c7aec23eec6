//! Property tests of the limits policy (`src/policy.rs`): for arbitrary predictions
//! (extreme, zero, negative, NaN and infinite values included), policies and host budgets,
//! the limits are finite and storable, at least the floors, at most the budget, never
//! tighter than the static defaults below the confidence threshold, monotone in the
//! predicted peak and wall time; escalation strictly raises the cap up to the budget and
//! never past it; a job is rejected exactly when the documented condition holds.

use presize::model::{Bounds, Prediction, Source};
use presize::policy::{
    decide, escalate, limits_for, static_limits, Decision, LimitMode, Limits, Policy, MAX_LIMIT,
};
use proptest::prelude::*;

/// Cases per property: the whole file runs in about 5 s (debug build, loaded 2-core host).
const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // No regression files written into the source tree on failure: the failing
        // input is printed, and a reproducer belongs in a named unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Special values that break naive float code.
const SPECIAL: [f64; 14] = [
    0.0,
    -0.0,
    -1.0,
    0.4,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    1e300,
    18446744073709551615.0, // u64::MAX as f64
    9007199254740993.0,     // 2^53 + 1
    4294967296.0,
];

/// Any float a model might hand over: ordinary sizes mostly, every IEEE class sometimes.
fn num() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..1e4f64,
        2 => 0.0..1e13f64,
        1 => prop::num::f64::ANY,
        2 => prop::sample::select(SPECIAL.to_vec()),
    ]
}

/// A confidence: mostly in [0, 1], sometimes anything.
fn confidence() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..=1.0f64,
        1 => prop::sample::select(vec![0.0, 0.05, 0.01, 1.0]),
        1 => prop::num::f64::ANY,
    ]
}

fn bounds() -> impl Strategy<Value = Bounds> {
    (num(), num(), num()).prop_map(|(peak_rss_mb, wall_seconds, cpu_seconds)| Bounds {
        peak_rss_mb,
        wall_seconds,
        cpu_seconds,
    })
}

fn prediction() -> impl Strategy<Value = Prediction> {
    (
        num(),
        num(),
        num(),
        confidence(),
        bounds(),
        bounds(),
        any::<bool>(),
    )
        .prop_map(
            |(cpu_seconds, peak_rss_mb, wall_seconds, confidence, upper, lower, model)| {
                Prediction {
                    cpu_seconds,
                    peak_rss_mb,
                    wall_seconds,
                    confidence,
                    upper,
                    lower,
                    model_version: "prop".into(),
                    source: if model { Source::Model } else { Source::Prior },
                }
            },
        )
}

/// Sizes in MB or seconds: small, large, and the extremes.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..100_000u64,
        1 => any::<u64>(),
        1 => prop::sample::select(vec![0, 1, u64::MAX, i64::MAX as u64, 1 << 53]),
    ]
}

fn positive_size() -> impl Strategy<Value = u64> {
    size().prop_map(|v| v.max(1))
}

fn headroom() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.5..4.0f64,
        1 => 1e-6..1e6f64,
        1 => prop::sample::select(vec![1e-300, 1.0, 1e300, f64::MAX]),
    ]
}

fn escalation_factor() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 1.0..8.0f64,
        1 => prop::sample::select(vec![1.0, 1.0 + f64::EPSILON, 1e300, f64::MAX]),
    ]
}

/// A policy that passes [`Policy::validate`].
fn policy() -> impl Strategy<Value = Policy> {
    (
        (headroom(), headroom(), size(), size()),
        (positive_size(), positive_size(), confidence()),
        (1u32..=10, escalation_factor(), size(), any::<bool>()),
        (prop_oneof![2 => Just(0u64), 1 => size()], any::<bool>()),
    )
        .prop_map(
            |(
                (mem_headroom, wall_headroom, memory_floor_mb, timeout_floor_s),
                (default_memory_mb, default_timeout_s, threshold),
                (max_attempts, escalation_factor, host_budget_mb, retry_timeouts),
                (max_wall_s, upper),
            )| Policy {
                mem_headroom,
                wall_headroom,
                memory_floor_mb,
                timeout_floor_s,
                default_memory_mb,
                default_timeout_s,
                confidence_threshold: if (0.0..=1.0).contains(&threshold) {
                    threshold
                } else {
                    0.05
                },
                max_attempts,
                escalation_factor,
                grace_period_s: 10,
                host_budget_mb,
                retry_timeouts,
                max_wall_s,
                limit_mode: if upper {
                    LimitMode::Upper
                } else {
                    LimitMode::Headroom
                },
                ..Policy::default()
            },
        )
        .prop_filter("valid policy", |p| p.validate().is_ok())
}

/// Any policy at all, valid or not (NaN knobs, zero defaults, factors below 1).
fn any_policy() -> impl Strategy<Value = Policy> {
    (
        (num(), num(), size(), size(), size(), size()),
        (num(), any::<u32>(), num(), size(), size(), any::<bool>()),
    )
        .prop_map(
            |((mh, wh, mf, tf, dm, dt), (ct, ma, ef, hb, mw, up))| Policy {
                mem_headroom: mh,
                wall_headroom: wh,
                memory_floor_mb: mf,
                timeout_floor_s: tf,
                default_memory_mb: dm,
                default_timeout_s: dt,
                confidence_threshold: ct,
                max_attempts: ma,
                escalation_factor: ef,
                grace_period_s: 0,
                host_budget_mb: hb,
                retry_timeouts: false,
                max_wall_s: mw,
                limit_mode: if up {
                    LimitMode::Upper
                } else {
                    LimitMode::Headroom
                },
                ..Policy::default()
            },
        )
}

fn budget() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1..200_000u64,
        1 => any::<u64>(),
        1 => prop::sample::select(vec![0, 1, 64, u64::MAX]),
    ]
}

fn confident(pred: &Prediction, policy: &Policy) -> bool {
    pred.confidence.is_finite() && pred.confidence >= policy.confidence_threshold
}

/// The largest timeout the policy may set: `max_wall_s` (never below the floor) when
/// configured, and always what the store can record.
fn timeout_cap(policy: &Policy) -> u64 {
    let cap = if policy.max_wall_s > 0 {
        policy.max_wall_s.max(policy.timeout_floor_s)
    } else {
        u64::MAX
    };
    cap.min(MAX_LIMIT)
}

/// Checks the bounds every set of limits from [`limits_for`] obeys.
fn check_limits(l: &Limits, pred: &Prediction, policy: &Policy, budget_mb: u64) {
    let cap = budget_mb.clamp(1, MAX_LIMIT);
    let tcap = timeout_cap(policy);
    // Finite and storable; never above the budget (the clamp wins over everything).
    assert!(
        l.memory_limit_mb >= 1 && l.memory_limit_mb <= cap,
        "{l:?} budget {cap}"
    );
    assert!(l.timeout_s >= 1 && l.timeout_s <= tcap, "{l:?} cap {tcap}");
    assert!(l.enforced);
    // At least the floors (as far as the budget and the timeout cap allow).
    assert!(
        l.memory_limit_mb >= policy.memory_floor_mb.min(cap),
        "{l:?}"
    );
    assert!(l.timeout_s >= policy.timeout_floor_s.min(tcap), "{l:?}");
    // Below the confidence threshold: never tighter than the static defaults.
    if !confident(pred, policy) {
        let st = static_limits(policy, budget_mb);
        assert!(l.memory_limit_mb >= st.memory_limit_mb, "{l:?} < {st:?}");
        assert!(l.timeout_s >= st.timeout_s.min(tcap), "{l:?} < {st:?}");
    }
}

/// Non-NaN values (±∞ included), for ordering.
fn ordered() -> impl Strategy<Value = f64> {
    num().prop_filter("ordered", |v| !v.is_nan())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn limits_are_bounded(pred in prediction(), policy in policy(), budget in budget()) {
        let l = limits_for(&pred, &policy, budget);
        check_limits(&l, &pred, &policy, budget);
    }

    /// The documented formulas on ordinary values (the bound checks above hold everywhere).
    #[test]
    fn limits_follow_the_formulas(
        peak in 0.0..1e6f64,
        upper in 0.0..1e6f64,
        wall in 0.0..1e6f64,
        conf in 0.0..=1.0f64,
        mut policy in policy(),
        budget in 1..10_000_000u64,
    ) {
        policy.mem_headroom = policy.mem_headroom.clamp(0.5, 4.0);
        policy.wall_headroom = policy.wall_headroom.clamp(0.5, 4.0);
        policy.memory_floor_mb %= 100_000;
        policy.timeout_floor_s %= 100_000;
        let pred = Prediction {
            cpu_seconds: wall,
            peak_rss_mb: peak,
            wall_seconds: wall,
            confidence: conf,
            upper: Bounds { peak_rss_mb: upper, wall_seconds: wall, cpu_seconds: wall },
            lower: Bounds { peak_rss_mb: 0.0, wall_seconds: 0.0, cpu_seconds: 0.0 },
            model_version: "prop".into(),
            source: Source::Model,
        };
        let l = limits_for(&pred, &policy, budget);
        let rss = match policy.limit_mode {
            LimitMode::Headroom | LimitMode::CostAware => policy.mem_headroom * peak,
            LimitMode::Upper => upper.max(peak),
        };
        let mut mem = (rss.ceil() as u64).max(policy.memory_floor_mb).max(1);
        let mut timeout = ((policy.wall_headroom * wall).ceil() as u64)
            .max(policy.timeout_floor_s)
            .max(1);
        if conf < policy.confidence_threshold {
            mem = mem.max(policy.default_memory_mb);
            timeout = timeout.max(policy.default_timeout_s);
        }
        prop_assert_eq!(l.memory_limit_mb, mem.min(budget));
        prop_assert_eq!(l.timeout_s, timeout.min(timeout_cap(&policy)));
    }

    #[test]
    fn memory_is_monotone_in_the_predicted_peak(
        pred in prediction(),
        policy in policy(),
        budget in budget(),
        a in ordered(),
        b in ordered(),
        upper_bound in any::<bool>(),
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let with = |v: f64| {
            let mut p = pred.clone();
            if upper_bound {
                p.upper.peak_rss_mb = v;
            } else {
                p.peak_rss_mb = v;
            }
            limits_for(&p, &policy, budget)
        };
        let (l1, l2) = (with(lo), with(hi));
        prop_assert!(l1.memory_limit_mb <= l2.memory_limit_mb, "{lo} -> {l1:?}, {hi} -> {l2:?}");
        prop_assert_eq!(l1.timeout_s, l2.timeout_s);
    }

    #[test]
    fn timeout_is_monotone_in_the_predicted_wall(
        pred in prediction(),
        policy in policy(),
        budget in budget(),
        a in ordered(),
        b in ordered(),
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let with = |v: f64| {
            let mut p = pred.clone();
            p.wall_seconds = v;
            limits_for(&p, &policy, budget)
        };
        let (l1, l2) = (with(lo), with(hi));
        prop_assert!(l1.timeout_s <= l2.timeout_s, "{lo} -> {l1:?}, {hi} -> {l2:?}");
        prop_assert_eq!(l1.memory_limit_mb, l2.memory_limit_mb);
    }

    /// Rejected iff the predicted lower bound of peak RSS exceeds the budget, or a maximum
    /// wall time is configured and the lower bound of wall time exceeds it. Otherwise the
    /// limits are those of `limits_for` (enforced), or the static defaults in dry-run.
    #[test]
    fn rejection_iff_documented_condition(
        pred in prediction(),
        policy in policy(),
        budget in budget(),
        dry_run in any::<bool>(),
    ) {
        let expect_reject = pred.lower.peak_rss_mb > budget as f64
            || (policy.max_wall_s > 0 && pred.lower.wall_seconds > policy.max_wall_s as f64);
        match decide(&pred, &policy, budget, dry_run) {
            Decision::Reject(r) => {
                prop_assert!(expect_reject, "rejected: {}", r.reason);
                prop_assert!(!r.reason.is_empty() && !r.reason.contains('\n'));
            }
            Decision::Run {
                predicted, applied, ..
            } => {
                prop_assert!(!expect_reject, "not rejected: {predicted:?}");
                let l = limits_for(&pred, &policy, budget);
                if dry_run {
                    prop_assert_eq!(predicted, Limits { enforced: false, ..l });
                    let st = static_limits(&policy, budget);
                    prop_assert_eq!(applied, st);
                    prop_assert!(!applied.enforced);
                    prop_assert!(applied.memory_limit_mb <= budget.max(1));
                    prop_assert_eq!(applied.timeout_s, policy.default_timeout_s.min(MAX_LIMIT));
                } else {
                    prop_assert_eq!(predicted, l);
                    prop_assert_eq!(applied, l);
                }
            }
        }
    }

    /// One escalation: strictly above the killed cap, never above the budget, at least the
    /// factor × the killed cap (and × the measured peak) and the upper bound as far as the
    /// budget allows; `None` exactly when no higher cap fits in the budget.
    #[test]
    fn escalation_raises_the_cap_within_the_budget(
        killed in size(),
        measured in prop::option::of(num()),
        pred in prediction(),
        policy in policy(),
        budget in budget(),
    ) {
        let next = escalate(killed, measured, &pred, &policy, budget);
        let top = budget.min(MAX_LIMIT);
        match next {
            None => prop_assert!(killed >= top, "no escalation below the budget"),
            Some(n) => {
                prop_assert!(n > killed && n <= top, "{killed} -> {n} (budget {budget})");
                let b = top as f64;
                let at_least = |target: f64| {
                    let t = if target.is_nan() { 0.0 } else { target.min(b) };
                    // u64 -> f64 rounds: compare with a relative tolerance.
                    n as f64 >= t * (1.0 - 1e-12)
                };
                prop_assert!(at_least(policy.escalation_factor * killed as f64));
                prop_assert!(at_least(pred.upper.peak_rss_mb.max(0.0)));
                if let Some(m) = measured {
                    prop_assert!(at_least(policy.escalation_factor * m.max(0.0)));
                }
            }
        }
    }

    /// Repeated OOM kills: the cap rises strictly at every step and reaches the budget,
    /// then escalation stops.
    #[test]
    fn escalation_chain_reaches_the_budget(
        start in 0..1_000_000u64,
        budget in 1..1_000_000_000u64,
        factor in 1.5..4.0f64,
        pred in prediction(),
        mut policy in policy(),
    ) {
        policy.escalation_factor = factor;
        let mut cap = start.min(budget);
        let mut steps = 0;
        while let Some(next) = escalate(cap, None, &pred, &policy, budget) {
            prop_assert!(next > cap && next <= budget);
            cap = next;
            steps += 1;
            prop_assert!(steps <= 64, "no end after 64 escalations");
        }
        prop_assert_eq!(cap, budget);
    }

    /// Unvalidated knobs (NaN, zero, factors below one): no panic, and the limits still
    /// respect the budget.
    #[test]
    fn any_policy_never_panics(
        pred in prediction(),
        policy in any_policy(),
        budget in budget(),
        killed in size(),
        measured in prop::option::of(num()),
        dry_run in any::<bool>(),
    ) {
        let l = limits_for(&pred, &policy, budget);
        prop_assert!(l.memory_limit_mb >= 1 && l.memory_limit_mb <= budget.max(1));
        prop_assert!(l.timeout_s >= 1 && l.timeout_s <= MAX_LIMIT);
        let _ = decide(&pred, &policy, budget, dry_run);
        if let Some(n) = escalate(killed, measured, &pred, &policy, budget) {
            prop_assert!(n > killed && n <= budget);
        }
    }
}
