//! Settled attempts with chosen timestamps, written through `Store::import_settled`.

use std::time::{Duration, SystemTime};

use presize::job::{LimitSource, Outcome};
use presize::model::{Bounds, Prediction, Source};
use presize::policy::Limits;
use presize::store::{AttemptTimes, NewPrediction, Settlement, Store};

/// One attempt of a historical job. `Attempt::new` gives a small, successful job under
/// enforced predicted limits; tests change what they need.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub job_id: String,
    pub job_key: String,
    pub attempt: u32,
    pub model_version: String,
    pub source: Source,
    pub confidence: f64,
    /// Predicted (cpu s, peak MB, wall s).
    pub predicted: (f64, f64, f64),
    /// Upper bounds (cpu s, peak MB, wall s).
    pub upper: (f64, f64, f64),
    pub limit_mb: u64,
    pub applied_mb: u64,
    pub timeout_s: u64,
    pub enforced: bool,
    pub dry_run: bool,
    /// Measured (cpu s, peak MB, wall s); `None` for rejected / lost attempts.
    pub actual: Option<(f64, f64, f64)>,
    pub outcome: Outcome,
    /// When it settled; it started `wall` seconds earlier.
    pub settled_at: SystemTime,
}

impl Attempt {
    pub fn new(job_id: &str, job_key: &str, settled_at: SystemTime) -> Attempt {
        Attempt {
            job_id: job_id.into(),
            job_key: job_key.into(),
            attempt: 1,
            model_version: "gbt-test".into(),
            source: Source::Model,
            confidence: 0.5,
            predicted: (10.0, 100.0, 12.0),
            upper: (15.0, 150.0, 18.0),
            limit_mb: 150,
            applied_mb: 150,
            timeout_s: 60,
            enforced: true,
            dry_run: false,
            actual: Some((9.0, 90.0, 11.0)),
            outcome: Outcome::Ok,
            settled_at,
        }
    }

    /// Write it; returns the row id.
    pub fn import(&self, store: &mut Store) -> i64 {
        let b = |(c, r, w): (f64, f64, f64)| Bounds {
            peak_rss_mb: r,
            wall_seconds: w,
            cpu_seconds: c,
        };
        let (pc, pr, pw) = self.predicted;
        let wall = self.actual.map_or(0.0, |a| a.2);
        let started = self.settled_at - Duration::from_secs_f64(wall);
        let rejected = self.outcome == Outcome::Rejected;
        let row = NewPrediction {
            job_id: self.job_id.clone(),
            analysis_id: None,
            job_key: self.job_key.clone(),
            runtime: "python".into(),
            script_path: None,
            script_sha256: None,
            command_json: "[]".into(),
            features_json: "{}".into(),
            schema_hash: "x".into(),
            prediction: Prediction {
                cpu_seconds: pc,
                peak_rss_mb: pr,
                wall_seconds: pw,
                confidence: self.confidence,
                upper: b(self.upper),
                lower: b((pc / 2.0, pr / 2.0, pw / 2.0)),
                model_version: self.model_version.clone(),
                source: self.source,
            },
            predicted: Limits {
                memory_limit_mb: self.limit_mb,
                timeout_s: self.timeout_s,
                enforced: self.enforced && !self.dry_run,
            },
            applied: (!rejected).then_some(Limits {
                memory_limit_mb: self.applied_mb,
                timeout_s: self.timeout_s,
                enforced: self.enforced && !self.dry_run,
            }),
            memory_source: (!rejected).then_some(if self.dry_run {
                LimitSource::DryRun
            } else if self.enforced {
                LimitSource::Predicted
            } else {
                LimitSource::Static
            }),
            timeout_source: (!rejected).then_some(if self.dry_run {
                LimitSource::DryRun
            } else if self.enforced {
                LimitSource::Predicted
            } else {
                LimitSource::Static
            }),
            memory_enforced: !rejected,
            dry_run: self.dry_run,
            backend: "test".into(),
            priority: "normal".into(),
            attempt: self.attempt,
            host: "h".into(),
            executor_pid: 1,
            executor_start: None,
            rejected,
            sizing: Default::default(),
            size: Default::default(),
        };
        let s = Settlement {
            actual_cpu_s: self.actual.map(|a| a.0),
            actual_rss_mb: self.actual.map(|a| a.1),
            actual_wall_s: self.actual.map(|a| a.2),
            rusage_maxrss_mb: None,
            measure_source: "test".into(),
            exit_code: match self.outcome {
                Outcome::Ok => Some(0),
                Outcome::Failed => Some(1),
                _ => None,
            },
            signal: None,
            outcome: self.outcome,
            memory_enforced: !rejected,
        };
        store
            .import_settled(
                &row,
                &s,
                &AttemptTimes {
                    predicted_at: started,
                    started_at: (!rejected).then_some(started),
                    settled_at: self.settled_at,
                },
            )
            .expect("import a settled attempt")
    }
}

/// Parse an RFC 3339 UTC time.
pub fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(s).expect("a valid time")
}

/// `t` plus `h` hours.
pub fn plus_h(t: SystemTime, h: f64) -> SystemTime {
    t + Duration::from_secs_f64(h * 3600.0)
}

/// `t` minus `h` hours.
pub fn minus_h(t: SystemTime, h: f64) -> SystemTime {
    t - Duration::from_secs_f64(h * 3600.0)
}
