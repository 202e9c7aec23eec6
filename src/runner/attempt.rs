//! The attempt loop: one job's attempts over a [`Backend`], and the one retry decision
//! every backend goes through.
//!
//! The sizing engine ([`Sizer`]) decides the first attempt's limits once, in
//! [`super::plan`], and every retry once, in [`next_attempt`]. A backend only starts an
//! attempt ([`Backend::launch`]), waits for its end ([`Backend::wait`]) and records it
//! ([`Backend::record`]). The local executor runs an attempt to its end inside `launch`;
//! SLURM submits it, and its end is found by `wait` (`run --wait`) or, in any later
//! presize, by the settle pass ([`super::cluster::settle_pass`]), which continues the job
//! through the same [`next_attempt`] and [`after_attempt`].

use crate::error::Error;
use crate::job::Outcome;
use crate::policy::{Evidences, LimitSource, Limits, Policy, Sizer, Sizing};
use crate::store::Store;

use super::rows::JobRows;
use super::AttemptReport;

/// One attempt: its number (1-based), its limits and why they are what they are.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub number: u32,
    pub limits: Limits,
    pub sizing: Sizing,
}

/// The next attempt's limits, as the retry rule decided them, and what changed in the
/// sizing record (`Some` source: the retry set that limit).
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    pub limits: Limits,
    pub memory_source: Option<LimitSource>,
    pub timeout_source: Option<LimitSource>,
    pub reason: String,
}

impl Attempt {
    /// The attempt that follows this one under `retry`.
    pub(crate) fn next(&self, retry: &Retry) -> Attempt {
        let mut sizing = self.sizing.clone();
        if let Some(s) = retry.memory_source {
            sizing.memory_source = s;
        }
        if let Some(s) = retry.timeout_source {
            sizing.timeout_source = s;
        }
        sizing.reason = retry.reason.clone();
        Attempt {
            number: self.number + 1,
            limits: retry.limits,
            sizing,
        }
    }
}

/// Whether an attempt that ended with `outcome` may be retried at all: not interrupted,
/// below `max_attempts`, and killed at a limit (OOM or timeout). [`next_attempt`] checks
/// this first; callers use it to skip gathering evidence for attempts that end the job.
pub(crate) fn retry_possible(
    policy: &Policy,
    a: &Attempt,
    outcome: Outcome,
    interrupted: bool,
) -> bool {
    !interrupted
        && a.number < policy.max_attempts
        && matches!(outcome, Outcome::OomKilled | Outcome::TimedOut)
}

/// The one retry decision of every backend (local, SLURM `--wait`, the SLURM settle pass
/// and the replay's simulated backend): after attempt `a` ended with `outcome`, the next
/// attempt's limits by the sizing engine's retry rule ([`Sizer::retry_limits`]) under a
/// `budget_mb` budget, or `None` when the job is not retried.
pub(crate) fn next_attempt(
    policy: &Policy,
    budget_mb: u64,
    ev: &Evidences<'_>,
    a: &Attempt,
    outcome: Outcome,
    interrupted: bool,
) -> Option<Retry> {
    if !retry_possible(policy, a, outcome, interrupted) {
        return None;
    }
    let limits =
        Sizer::new(policy, budget_mb).retry_limits(ev, a.limits, &a.sizing, outcome, a.number)?;
    Some(Retry {
        limits,
        memory_source: (outcome == Outcome::OomKilled).then_some(LimitSource::Predicted),
        timeout_source: (outcome == Outcome::TimedOut).then_some(
            if limits.timeout_s == policy.default_timeout_s {
                LimitSource::Static
            } else {
                LimitSource::Predicted
            },
        ),
        reason: format!("retry after {outcome}: the engine's retry rule"),
    })
}

/// What `launch` did.
pub(crate) enum Launched<E> {
    /// The backend ran the attempt to its end (the local executor).
    Ended(E),
    /// Handed over (SLURM job id): it ends later, found by `wait` or a settle pass.
    Submitted(String),
    /// A signal stopped presize before the job started; the row is settled.
    Interrupted(i32),
}

/// What `record` did.
pub(crate) enum Recorded {
    /// Settled; the next attempt's row when the backend writes it with the settlement.
    Settled { next_row: Option<i64> },
    /// Another presize settled this attempt first.
    Elsewhere,
    /// The job ended but its row could not be written (its result is kept aside): stop.
    Unrecorded,
}

/// Where attempts run: the local executor or SLURM.
pub(crate) trait Backend {
    /// How an attempt ended, as this backend measured it.
    type End;
    /// The `backend` column of the job's rows.
    fn name(&self) -> &'static str;
    /// Whether memory caps are enforced (the `memory_enforced` column).
    fn enforces_memory(&self) -> bool;
    /// A warning when caps are not enforced.
    fn unenforced_warning(&self) -> Option<String>;
    /// A signal that should stop the job before its next attempt starts.
    fn signal_pending(&self) -> Option<i32> {
        None
    }
    /// Start attempt `a`, recorded as `row`. On an error the row is settled.
    fn launch(
        &mut self,
        store: &mut Store,
        row: i64,
        a: &Attempt,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Launched<Self::End>, Error>;
    /// Wait for a submitted attempt to end; `None` when another presize settled it.
    fn wait(
        &mut self,
        store: &mut Store,
        row: i64,
        a: &Attempt,
        handle: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Option<Self::End>, Error>;
    /// The outcome, and whether a signal to presize ended the attempt.
    fn outcome(end: &Self::End) -> (Outcome, bool);
    /// Settle `row` with `end`, and record the next attempt if `retry` is given and this
    /// backend writes it together with the settlement.
    fn record(
        &mut self,
        store: &mut Store,
        row: i64,
        a: &Attempt,
        end: &mut Self::End,
        retry: Option<&Retry>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Recorded, Error>;
    /// The attempt as `run` reports it.
    fn report(&self, row: i64, a: &Attempt, end: Self::End) -> AttemptReport;
    /// After another presize settled an attempt of `job_id`: its attempt still running
    /// (row, attempt, handle), or `None` when every attempt is settled.
    fn follow(
        &mut self,
        _store: &mut Store,
        _job_id: &str,
    ) -> Result<Option<(i64, Attempt, String)>, Error> {
        Ok(None)
    }
    /// The job's attempts as `run` reports them at the end (`collected`: those this
    /// process saw end).
    fn attempts(
        &self,
        _store: &Store,
        _job_id: &str,
        collected: Vec<AttemptReport>,
    ) -> Result<Vec<AttemptReport>, Error> {
        Ok(collected)
    }
}

/// What follows a recorded attempt.
pub(crate) enum After {
    /// No further attempt.
    Stop,
    /// Another presize settled it (and continues the job).
    Elsewhere,
    /// Its row could not be written: stop.
    Unrecorded,
    /// Retry: the next attempt, and its row if already written.
    Next { row: Option<i64>, attempt: Attempt },
}

/// Record how attempt `a` (row `row`) ended and say what follows under `retry` (from
/// [`next_attempt`]). The loop and the settle pass both go through here.
pub(crate) fn after_attempt<B: Backend>(
    store: &mut Store,
    backend: &mut B,
    row: i64,
    a: &Attempt,
    end: &mut B::End,
    retry: Option<Retry>,
    progress: &mut dyn FnMut(&str),
) -> Result<After, Error> {
    let next_row = match backend.record(store, row, a, end, retry.as_ref(), progress)? {
        Recorded::Settled { next_row } => next_row,
        Recorded::Elsewhere => return Ok(After::Elsewhere),
        Recorded::Unrecorded => return Ok(After::Unrecorded),
    };
    let Some(retry) = retry else {
        return Ok(After::Stop);
    };
    let (outcome, _) = B::outcome(end);
    if outcome == Outcome::OomKilled {
        progress(&format!(
            "OOM-killed at {} MB; retrying with {} MB",
            a.limits.memory_limit_mb, retry.limits.memory_limit_mb
        ));
    } else if outcome == Outcome::TimedOut {
        progress(&format!(
            "killed at its {} s timeout; retrying with {} s",
            a.limits.timeout_s, retry.limits.timeout_s
        ));
    }
    Ok(After::Next {
        row: next_row,
        attempt: a.next(&retry),
    })
}

/// How the loop ended.
pub(crate) enum Finish {
    /// The last attempt ended (its exit code is the job's).
    Ended,
    /// Submitted without waiting.
    Submitted,
    /// A signal stopped presize between attempts or before a job started.
    Interrupted(i32),
}

/// What [`drive`] returns.
pub(crate) struct Driven {
    pub attempts: Vec<AttemptReport>,
    /// Handles (SLURM job ids) of the attempts this process submitted or followed.
    pub handles: Vec<String>,
    pub finish: Finish,
}

/// One job's attempt loop: the first attempt under `first`, then each retry the engine
/// decides ([`next_attempt`] on `ev` under `budget_mb`), until one is not retried.
/// `wait = false` returns once the first attempt is submitted (SLURM without `--wait`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive<B: Backend>(
    store: &mut Store,
    backend: &mut B,
    rows: &JobRows,
    predicted: Limits,
    first: Attempt,
    ev: &Evidences<'_>,
    policy: &Policy,
    budget_mb: u64,
    wait: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Driven, Error> {
    let mut attempts = Vec::new();
    let mut handles = Vec::new();
    let mut a = first;
    // The attempt's row when already written; row and handle when already submitted.
    let mut row: Option<i64> = None;
    let mut submitted: Option<(i64, String)> = None;
    loop {
        let (id, mut end) = match submitted.take() {
            None => {
                if let Some(sig) = backend.signal_pending() {
                    // A signal before this attempt (e.g. while waiting to retry): do not
                    // start it.
                    return Ok(Driven {
                        attempts,
                        handles,
                        finish: Finish::Interrupted(sig),
                    });
                }
                let id = match row {
                    Some(id) => id,
                    None => store.insert_prediction(&rows.row(
                        predicted,
                        Some(a.limits),
                        &a.sizing,
                        a.number,
                        false,
                    ))?,
                };
                match backend.launch(store, id, &a, progress)? {
                    Launched::Ended(end) => (id, Some(end)),
                    Launched::Interrupted(sig) => {
                        return Ok(Driven {
                            attempts,
                            handles,
                            finish: Finish::Interrupted(sig),
                        })
                    }
                    Launched::Submitted(h) => {
                        handles.push(h.clone());
                        if !wait {
                            return Ok(Driven {
                                attempts,
                                handles,
                                finish: Finish::Submitted,
                            });
                        }
                        (id, backend.wait(store, id, &a, &h, progress)?)
                    }
                }
            }
            Some((id, h)) => (id, backend.wait(store, id, &a, &h, progress)?),
        };
        let after = match &mut end {
            Some(end) => {
                let (outcome, interrupted) = B::outcome(end);
                let retry = next_attempt(policy, budget_mb, ev, &a, outcome, interrupted);
                after_attempt(store, backend, id, &a, end, retry, progress)?
            }
            None => After::Elsewhere,
        };
        if let Some(end) = end {
            if !matches!(after, After::Elsewhere) {
                attempts.push(backend.report(id, &a, end));
            }
        }
        match after {
            After::Stop | After::Unrecorded => break,
            After::Next { row: r, attempt } => {
                a = attempt;
                row = r;
            }
            After::Elsewhere => match backend.follow(store, rows.job_id())? {
                Some((r, attempt, h)) => {
                    if !handles.contains(&h) {
                        handles.push(h.clone());
                    }
                    a = attempt;
                    submitted = Some((r, h));
                }
                None => break,
            },
        }
    }
    Ok(Driven {
        attempts,
        handles,
        finish: Finish::Ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bounds, Prediction, Source};
    use crate::policy::{Evidence, JobSize, KeyHistory};

    fn prior() -> Prediction {
        let b = Bounds {
            peak_rss_mb: 40.0,
            wall_seconds: 5.0,
            cpu_seconds: 5.0,
        };
        Prediction {
            cpu_seconds: 1.0,
            peak_rss_mb: 10.0,
            wall_seconds: 1.0,
            confidence: 0.0,
            upper: b,
            lower: b,
            model_version: "p".into(),
            source: Source::Prior,
        }
    }

    fn attempt(number: u32, memory_mb: u64, timeout_s: u64) -> Attempt {
        Attempt {
            number,
            limits: Limits {
                memory_limit_mb: memory_mb,
                timeout_s,
                enforced: true,
            },
            sizing: Sizing {
                evidence: Evidence::Novel,
                memory_source: LimitSource::Override,
                timeout_source: LimitSource::Predicted,
                reason: "first".into(),
            },
        }
    }

    /// The one retry decision: `max_attempts`, interruption and the cause gate it; the
    /// limits are the engine's; the sources and reason say what the retry changed.
    #[test]
    fn next_attempt_follows_the_policy() {
        let (pred, key) = (prior(), KeyHistory::default());
        let ev = Evidences {
            prediction: &pred,
            novelty: &[],
            key: &key,
            size: JobSize::default(),
            model_fallback: None,
        };
        let policy = Policy {
            default_memory_mb: 64,
            escalation_factor: 3.0,
            max_attempts: 3,
            ..Policy::default()
        };
        let budget = 100_000;
        let a1 = attempt(1, 100, 60);
        let r = next_attempt(&policy, budget, &ev, &a1, Outcome::OomKilled, false).unwrap();
        // The draws' top (64 MB) is below the killed cap: × escalation_factor^attempt.
        assert_eq!(r.limits.memory_limit_mb, 300);
        assert_eq!(r.limits.timeout_s, 60);
        assert_eq!(r.memory_source, Some(LimitSource::Predicted));
        assert_eq!(r.timeout_source, None);
        let a2 = a1.next(&r);
        assert_eq!(a2.number, 2);
        assert_eq!(a2.sizing.memory_source, LimitSource::Predicted);
        assert_eq!(a2.sizing.timeout_source, LimitSource::Predicted);
        assert_eq!(
            a2.sizing.reason,
            "retry after oom_killed: the engine's retry rule"
        );
        let r = next_attempt(&policy, budget, &ev, &a2, Outcome::OomKilled, false).unwrap();
        assert_eq!(r.limits.memory_limit_mb, 2700);
        // The last allowed attempt, an interrupted one and a failure are not retried.
        let a3 = a2.next(&r);
        assert!(next_attempt(&policy, budget, &ev, &a3, Outcome::OomKilled, false).is_none());
        assert!(next_attempt(&policy, budget, &ev, &a1, Outcome::OomKilled, true).is_none());
        assert!(next_attempt(&policy, budget, &ev, &a1, Outcome::Failed, false).is_none());
        // A timeout the engine set below the static default retries at the default.
        let r = next_attempt(&policy, budget, &ev, &a1, Outcome::TimedOut, false).unwrap();
        assert_eq!(r.limits.timeout_s, policy.default_timeout_s);
        assert_eq!(r.timeout_source, Some(LimitSource::Static));
        assert_eq!(r.memory_source, None);
        // The budget caps the retry.
        let r = next_attempt(&policy, 250, &ev, &a1, Outcome::OomKilled, false).unwrap();
        assert!(r.limits.memory_limit_mb <= 250, "{r:?}");
    }
}
