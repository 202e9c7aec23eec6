//! The forecast learns: fixture histories (steady, surge, a weekly pattern over three weeks,
//! a maintenance window) are forecast at many points in simulated time through the library
//! (`forecast`, `record`, `score_pending`, as `presize forecast` does), each forecast is
//! scored once its horizon has passed, and the scores are checked: interval coverage near
//! nominal, the weekly profile beating the damped trend on the weekly fixture, the known
//! maintenance window lowering the error. Run with `--nocapture` to see the numbers.

use presize::forecast::{self, learn, ForecastConfig, ForecastOptions};
use presize::stats::StatsOptions;
use presize::store::Store;
use serde_json::Value;

use crate::helper::history::{at, plus_h, Attempt};
use crate::helper::{stdout, Env};

const T0: &str = "2026-03-02T00:00:00Z"; // a Monday

/// Deterministic uniform numbers in [0, 1) (64-bit LCG, top 53 bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson draw (Knuth).
    fn poisson(&mut self, lambda: f64) -> usize {
        let l = (-lambda).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.next();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

/// Jobs with Poisson arrivals at `rate(hour since T0)` per hour over `hours`, 30 min each
/// under a 1000 MB cap; returns how many.
fn fill(store: &mut Store, hours: usize, seed: u64, rate: impl Fn(usize) -> f64) -> usize {
    let mut rng = Lcg(seed);
    let mut n = 0;
    for hour in 0..hours {
        for _ in 0..rng.poisson(rate(hour)) {
            let t = plus_h(at(T0), hour as f64 + rng.next());
            let mut a = Attempt::new(&format!("j{n}"), ["etl", "qc"][n % 2], t);
            a.limit_mb = 1000;
            a.applied_mb = 1000;
            a.actual = Some((600.0, 500.0, 1800.0));
            a.import(store);
            n += 1;
        }
    }
    n
}

fn opts(h: f64, config: &ForecastConfig) -> ForecastOptions {
    ForecastOptions {
        horizon_hours: h,
        host_budget_mb: 8000,
        stats: StatsOptions::default(),
        config: config.clone(),
    }
}

/// Forecast every `step_h` hours from `from_h` to `to_h` (hours since T0) at each horizon,
/// recording and scoring as `presize forecast` does; then score what is left at `end_h`.
fn simulate(
    store: &Store,
    horizons: &[f64],
    (from_h, to_h, step_h): (f64, f64, f64),
    end_h: f64,
    config: &ForecastConfig,
) {
    let mut t = from_h;
    while t <= to_h {
        let now = plus_h(at(T0), t);
        learn::score_pending(store, now).unwrap();
        for &h in horizons {
            if t + h > end_h {
                continue;
            }
            let f = forecast::forecast(store, now, &opts(h, config)).unwrap();
            forecast::record(store, &f, "cli").unwrap();
        }
        t += step_h;
    }
    learn::score_pending(store, plus_h(at(T0), end_h)).unwrap();
}

fn accuracy(store: &Store, end_h: f64) -> Vec<learn::HorizonAccuracy> {
    learn::accuracy(store, plus_h(at(T0), end_h), 0.8).unwrap()
}

fn show(name: &str, acc: &[learn::HorizonAccuracy]) {
    for a in acc {
        println!(
            "{name}: horizon {} h: {} scored, MAE {:.2} jobs, rel error {:.1} %, GB·h rel error {:.1} %, \
             coverage {:.1} % (scored intervals {}), nominal {:.0} %; trend MAE {}, profile MAE {} over {}",
            a.horizon_hours,
            a.scored,
            a.jobs_mae,
            a.jobs_rel_error * 100.0,
            a.gbh_rel_error * 100.0,
            a.interval_coverage * 100.0,
            a.scored_interval_coverage
                .map_or("-".into(), |c| format!("{:.1} %", c * 100.0)),
            a.nominal * 100.0,
            a.trend_mae.map_or("-".into(), |m| format!("{m:.2}")),
            a.profile_mae.map_or("-".into(), |m| format!("{m:.2}")),
            a.compared
        );
    }
}

#[test]
fn steady_intervals_cover_near_nominal() {
    let env = Env::new();
    let mut store = Store::open(&env.db).unwrap();
    let days = 10;
    fill(&mut store, days * 24, 7, |_| 4.0);
    let end = (days * 24) as f64;
    simulate(
        &store,
        &[1.0, 6.0],
        (48.0, end - 1.0, 2.0),
        end,
        &ForecastConfig::default(),
    );
    let acc = accuracy(&store, end);
    show("steady", &acc);
    assert_eq!(acc.len(), 2);
    for a in &acc {
        assert!(a.scored >= 80, "{a:?}");
        assert!(
            (0.68..=0.92).contains(&a.interval_coverage),
            "coverage {} far from 0.8: {a:?}",
            a.interval_coverage
        );
        // Under two weeks of history: the damped trend only.
        assert!(a.profile_mae.is_none());
    }
    // Every recorded forecast whose horizon has passed was scored.
    let unscored: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM forecast_record WHERE scored_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unscored, 0);
}

/// Weekdays 08–18 h: 6 jobs/h; other weekday hours 1/h; weekends 0.5/h.
fn weekly(hour: usize) -> f64 {
    let day = (hour / 24) % 7; // 0 = Monday
    let hod = hour % 24;
    if day >= 5 {
        0.5
    } else if (8..18).contains(&hod) {
        6.0
    } else {
        1.0
    }
}

#[test]
fn weekly_profile_beats_the_damped_trend_and_covers() {
    let env = Env::new();
    let mut store = Store::open(&env.db).unwrap();
    let n = fill(&mut store, 21 * 24, 11, weekly);
    println!("weekly: {n} jobs over 3 weeks");
    let end = 21.0 * 24.0;
    // Forecasts in the third week, once two weeks of history exist.
    simulate(
        &store,
        &[1.0, 6.0],
        (14.0 * 24.0, end - 1.0, 1.0),
        end,
        &ForecastConfig::default(),
    );
    let acc = accuracy(&store, end);
    show("weekly", &acc);
    assert_eq!(acc.len(), 2);
    for a in &acc {
        let (t, p) = (a.trend_mae.unwrap(), a.profile_mae.unwrap());
        assert!(a.compared >= 100, "{a:?}");
        assert!(p < 0.8 * t, "profile MAE {p} does not beat trend MAE {t}");
        assert!(
            (0.68..=0.92).contains(&a.interval_coverage),
            "coverage {} far from 0.8: {a:?}",
            a.interval_coverage
        );
    }
    // The figure given is the profile, and it says so when it changes the answer: Monday
    // 07:00, the hour before the weekday rush, after a quiet weekend.
    let f = forecast::forecast(
        &store,
        plus_h(at(T0), 14.0 * 24.0 + 7.0),
        &opts(6.0, &ForecastConfig::default()),
    )
    .unwrap();
    assert_eq!(f.method, "weekly-profile");
    assert!(f.profile_changes_answer, "{f:?}");
    assert!(f.profile_jobs.unwrap() > 2.0 * f.trend_jobs, "{f:?}");
    assert!(forecast::markdown(&f).contains("| weekly profile |"));
}

#[test]
fn surge_is_scored_and_the_risk_rises() {
    let env = Env::new();
    let mut store = Store::open(&env.db).unwrap();
    // Three days at 2 jobs/h, then a day at 12 jobs/h.
    fill(&mut store, 4 * 24, 5, |h| if h < 72 { 2.0 } else { 12.0 });
    let end = 96.0;
    simulate(
        &store,
        &[1.0, 6.0],
        (24.0, end - 1.0, 2.0),
        end,
        &ForecastConfig::default(),
    );
    let acc = accuracy(&store, end);
    show("surge", &acc);
    assert!(acc.iter().all(|a| a.scored >= 30));
    // Forecasts made before the surge under-predicted it: their errors are on record.
    let before: f64 = store
        .conn()
        .query_row(
            "SELECT avg(actual_jobs - predicted_jobs) FROM forecast_record
             WHERE horizon_hours = 6 AND made_at >= '2026-03-04T19' AND made_at < '2026-03-05T00'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(before > 20.0, "{before}");
    // With a small budget the risk of exceeding it is higher during the surge than before.
    let risk = |t: f64| {
        let mut o = opts(6.0, &ForecastConfig::default());
        o.host_budget_mb = 4000;
        forecast::forecast(&store, plus_h(at(T0), t), &o).unwrap()
    };
    let (calm, surge) = (risk(60.0), risk(76.0));
    println!(
        "surge: risk of exceeding 4000 MB over 6 h: {:.3} before, {:.3} during",
        calm.budget_exceed_risk, surge.budget_exceed_risk
    );
    assert!(surge.budget_exceed_risk > calm.budget_exceed_risk);
    let pre = surge
        .actions
        .iter()
        .find(|a| a.action.starts_with("pre-warm"))
        .expect("pre-warm during the surge");
    assert!(pre.cost_gbh.unwrap() > 0.0);
    assert!(["immediate", "soon"].contains(&pre.urgency));
}

#[test]
fn a_known_maintenance_window_lowers_the_error() {
    // 4 jobs/h for eight days, none on day 6 from 08:00 to 14:00 (maintenance).
    let window = (6.0 * 24.0 + 8.0, 6.0 * 24.0 + 14.0);
    let rate = |h: usize| {
        if (h as f64) >= window.0 && (h as f64) < window.1 {
            0.0
        } else {
            4.0
        }
    };
    let with_event = ForecastConfig {
        events: vec![forecast::EventConfig {
            name: "kernel update".into(),
            kind: forecast::EventKind::Maintenance,
            start: humantime::format_rfc3339(plus_h(at(T0), window.0)).to_string(),
            end: humantime::format_rfc3339(plus_h(at(T0), window.1)).to_string(),
            demand_factor: 2.0,
        }],
        ..ForecastConfig::default()
    };
    let end = 8.0 * 24.0;
    let mut mae = Vec::new();
    for config in [ForecastConfig::default(), with_event.clone()] {
        let env = Env::new();
        let mut store = Store::open(&env.db).unwrap();
        fill(&mut store, 8 * 24, 3, rate);
        simulate(
            &store,
            &[6.0],
            (window.0 - 6.0, window.1, 1.0),
            end,
            &config,
        );
        let err: f64 = store
            .conn()
            .query_row(
                "SELECT avg(abs(actual_jobs - predicted_jobs)) FROM forecast_record",
                [],
                |r| r.get(0),
            )
            .unwrap();
        mae.push(err);
        if !config.events.is_empty() {
            // The forecast just before the window knows that no job runs in it.
            let f = forecast::forecast(&store, plus_h(at(T0), window.0 - 1.0), &opts(6.0, &config))
                .unwrap();
            assert_eq!(f.events.len(), 1);
            assert!(
                (f.event_factor - 1.0 / 6.0).abs() < 1e-9,
                "{}",
                f.event_factor
            );
            let drain = f
                .actions
                .iter()
                .find(|a| a.action.starts_with("drain for maintenance kernel update"))
                .expect("a drain action");
            assert_eq!(drain.urgency, "immediate");
        }
    }
    println!(
        "maintenance: MAE of 6 h forecasts around the window {:.2} jobs without the event, {:.2} with it",
        mae[0], mae[1]
    );
    assert!(mae[1] < 0.5 * mae[0], "{mae:?}");
}

#[test]
fn cli_records_scores_and_gives_several_horizons() {
    let env = Env::with_config("[forecast]\nprice_per_gbh = 0.01\n");
    {
        let mut store = Store::open(&env.db).unwrap();
        fill(&mut store, 48, 9, |_| 3.0);
    }
    let now1 = "2026-03-03T12:00:00Z";
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1500")
        .args([
            "forecast",
            "--json",
            "--horizon",
            "15m,1h,24",
            "--now",
            now1,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let fs = v["forecasts"].as_array().unwrap();
    let hs: Vec<f64> = fs
        .iter()
        .map(|f| f["horizon_hours"].as_f64().unwrap())
        .collect();
    assert_eq!(hs, [0.25, 1.0, 24.0]);
    for f in fs {
        let i = &f["predicted_jobs_interval"];
        assert!(i["lo"].as_f64().unwrap() <= f["predicted_jobs"].as_f64().unwrap());
        assert!(i["hi"].as_f64().unwrap() >= f["predicted_jobs"].as_f64().unwrap());
        assert_eq!(i["source"], "model");
        assert!(f["accuracy"].is_null());
        for a in f["actions"].as_array().unwrap() {
            assert!(["immediate", "soon", "planned"].contains(&a["urgency"].as_str().unwrap()));
            let r = a["risk"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&r));
            if let Some(g) = a["cost_gbh"].as_f64() {
                assert!((a["cost_money"].as_f64().unwrap() - g * 0.01).abs() < 1e-9);
            }
        }
    }
    // 3 jobs/h of 1000 MB × 0.5 h against a 1500 MB budget: scale up, with a cost.
    let day = &fs[2];
    assert_eq!(day["capacity_advice"], "scale-up");
    let up = day["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"].as_str().unwrap().starts_with("scale up"))
        .unwrap();
    assert!(up["cost_gbh"].as_f64().unwrap() > 0.0);
    assert!(up["risk"].as_f64().unwrap() > 0.5);
    let n: i64 = env
        .conn()
        .query_row("SELECT count(*) FROM forecast_record", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    // Two hours later the 15 min and 1 h forecasts are scored, the 24 h one is not yet.
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1500")
        .args(["forecast", "--json", "--horizon", "1h", "--no-record"])
        .args(["--now", "2026-03-03T14:00:00Z"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["accuracy"]["scored"], 1);
    let scored: Vec<(f64, f64)> = {
        let conn = env.conn();
        let mut st = conn
            .prepare("SELECT horizon_hours, actual_jobs FROM forecast_record WHERE scored_at IS NOT NULL ORDER BY horizon_hours")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(scored.iter().map(|s| s.0).collect::<Vec<_>>(), [0.25, 1.0]);
    // --no-record recorded nothing.
    let n: i64 = env
        .conn()
        .query_row("SELECT count(*) FROM forecast_record", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    // Markdown for several horizons: a summary table, then each horizon.
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "1500")
        .args([
            "forecast",
            "--horizon",
            "1h,6h",
            "--no-record",
            "--now",
            now1,
        ])
        .output()
        .unwrap();
    let md = stdout(&o);
    assert!(md.starts_with("# presize forecast — 2 horizons"), "{md}");
    assert!(md.contains("\n## presize forecast — next 6 h"), "{md}");
    assert!(md.contains(" — *"), "{md}");
}
