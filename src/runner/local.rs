//! The local backend: each attempt waits for host memory (admission), runs under the
//! executor's cgroup cap and timeout, and ends inside `launch`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Settings;
use crate::error::Error;
use crate::executor::admission::{Admission, AdmissionConfig, AdmissionError};
use crate::executor::{self, Actuals, ExecRequest, Executor};
use crate::job::{Outcome, Priority};
use crate::provenance::LimitSources;
use crate::store::spool::Spool;
use crate::store::{Measured, Settlement, Store};

use super::attempt::{Attempt, Backend, Launched, Recorded, Retry};
use super::keys::hostname;
use super::rows::{interrupted, unrun};
use super::AttemptReport;

/// What one job needs to run locally, beyond its limits.
pub(crate) struct LocalJob {
    pub command: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    pub run_as: Option<executor::user::RunAs>,
    pub priority: Priority,
    /// The predicted peak (MB), for admission.
    pub predicted_peak_mb: f64,
    /// Where the first attempt's limits came from, for the progress line.
    pub sources: LimitSources,
}

/// The local executor as a [`Backend`].
pub(crate) struct Local {
    exec: Executor,
    host: String,
    admission: AdmissionConfig,
    grace: Duration,
    pids_max: Option<u64>,
    job: Option<LocalJob>,
}

/// A local attempt's end: what the executor measured, and the space reserved for its
/// settlement.
pub(crate) struct LocalEnd {
    actuals: Actuals,
    spool: Option<Spool>,
}

impl Local {
    pub(crate) fn new(
        exec: Executor,
        settings: &Settings,
        queue_timeout: Option<Duration>,
    ) -> Self {
        Local {
            exec,
            host: hostname(),
            admission: AdmissionConfig {
                budget_mb: settings.host_budget_mb,
                burst_factor: settings.file.admission.burst_factor,
                auto_burst: settings.file.admission.auto_burst_rule(),
                queue_timeout,
                poll: Duration::from_millis(settings.file.admission.poll_ms.clamp(10, 10_000)),
            },
            grace: Duration::from_secs(settings.policy().grace_period_s),
            pids_max: (settings.file.executor.pids_max > 0)
                .then_some(settings.file.executor.pids_max),
            job: None,
        }
    }

    /// The job the next attempts belong to.
    pub(crate) fn set_job(&mut self, job: LocalJob) {
        self.job = Some(job);
    }
}

impl Backend for Local {
    type End = LocalEnd;

    fn name(&self) -> &'static str {
        self.exec.backend_name()
    }

    fn enforces_memory(&self) -> bool {
        self.exec.enforces_memory()
    }

    fn unenforced_warning(&self) -> Option<String> {
        if self.exec.enforces_memory() {
            return None;
        }
        self.exec.why_unenforced().map(|why| {
            format!("warning: memory caps are not enforced ({why}); measuring with rusage")
        })
    }

    fn signal_pending(&self) -> Option<i32> {
        executor::signals::pending()
    }

    fn launch(
        &mut self,
        store: &mut Store,
        id: i64,
        a: &Attempt,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Launched<LocalEnd>, Error> {
        let Some(job) = &self.job else {
            let _ = store.settle(id, &unrun(Outcome::Failed));
            return Err(Error::Usage("internal: no job to run".into()));
        };
        // Space for the settlement, reserved while there is some (see store::spool).
        let spool = Spool::reserve(store.path(), id).ok();
        let (applied, sources) = (a.limits, &job.sources);
        progress(&format!(
            "attempt {}: memory cap {} MB ({}{}), timeout {} s ({}){}",
            a.number,
            applied.memory_limit_mb,
            sources.memory,
            if self.exec.enforces_memory() {
                ""
            } else {
                ", not enforced"
            },
            applied.timeout_s,
            sources.timeout,
            match (&sources.reason, a.number) {
                (Some(r), 1) => format!(" — {r}"),
                _ => String::new(),
            }
        ));
        let req = ExecRequest {
            command: job.command.clone(),
            cwd: job.cwd.clone(),
            memory_limit_mb: Some(applied.memory_limit_mb),
            timeout: Duration::from_secs(applied.timeout_s),
            grace: self.grace,
            pids_max: self.pids_max,
            cgroup_name: executor::owner::Identity::current().cgroup_name(id),
            run_as: job.run_as.clone(),
        };
        let reservation = match Admission::new(store, self.host.clone(), self.admission.clone())
            .acquire(
                Some(id),
                applied.memory_limit_mb,
                job.predicted_peak_mb,
                job.priority,
                &mut |m: &str| progress(m),
            ) {
            Ok(r) => r,
            Err(AdmissionError::Interrupted(sig)) => {
                let _ = store.settle(id, &interrupted(sig));
                return Ok(Launched::Interrupted(sig));
            }
            Err(e) => {
                let outcome = match e {
                    AdmissionError::QueueTimeout { .. } => Outcome::QueueTimeout,
                    _ => Outcome::Failed,
                };
                let _ = store.settle(id, &unrun(outcome));
                return Err(e.into());
            }
        };
        let mut start_err = None;
        let result = self.exec.run(&req, &mut |st| {
            if let Err(e) =
                store.mark_started(id, st.pid, st.start_ticks, st.cgroup_name.as_deref())
            {
                start_err = Some(e);
            }
        });
        let released =
            Admission::new(store, self.host.clone(), self.admission.clone()).release(reservation);
        let actuals = match result {
            Ok(a) => a,
            Err(executor::ExecError::Interrupted(sig)) => {
                let _ = store.settle(id, &interrupted(sig));
                return Ok(Launched::Interrupted(sig));
            }
            Err(e) => {
                // Never leave the row dangling.
                let _ = store.settle(id, &unrun(Outcome::Failed));
                return Err(e.into());
            }
        };
        if let Err(e) = released {
            progress(&format!("warning: could not release the reservation: {e}"));
        }
        if let Some(e) = start_err {
            progress(&format!("warning: could not record the start: {e}"));
        }
        Ok(Launched::Ended(LocalEnd { actuals, spool }))
    }

    fn wait(
        &mut self,
        _store: &mut Store,
        _row: i64,
        _a: &Attempt,
        handle: &str,
        _progress: &mut dyn FnMut(&str),
    ) -> Result<Option<LocalEnd>, Error> {
        // `launch` never submits locally; nothing can be waited for.
        Err(Error::Usage(format!(
            "internal: the local backend has no submitted attempt {handle}"
        )))
    }

    fn outcome(end: &LocalEnd) -> (Outcome, bool) {
        (end.actuals.outcome, end.actuals.interrupted_by.is_some())
    }

    fn record(
        &mut self,
        store: &mut Store,
        id: i64,
        a: &Attempt,
        end: &mut LocalEnd,
        _retry: Option<&Retry>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Recorded, Error> {
        let actuals = &end.actuals;
        let settlement = Settlement {
            actual_cpu_s: actuals.cpu_s,
            actual_rss_mb: actuals.peak_rss_mb,
            actual_wall_s: Some(actuals.wall_s),
            rusage_maxrss_mb: Some(actuals.rusage_maxrss_mb),
            measure_source: actuals.measure_source.clone(),
            exit_code: actuals.exit_code,
            signal: actuals.signal,
            outcome: actuals.outcome,
            memory_enforced: actuals.memory_enforced,
        };
        let measured = Measured {
            charged_peak_mb: actuals.charged_peak_mb,
            oom_events: actuals
                .charged_peak_mb
                .is_some()
                .then_some(actuals.oom_events),
        };
        if let Err(e) = store.settle_measured(id, &settlement, &measured) {
            // The job ran: its exit code must not be hidden behind a store error (disk full).
            let kept = end.spool.as_mut().and_then(|sp| {
                sp.write(id, &settlement, &measured)
                    .ok()
                    .map(|()| sp.path().display().to_string())
            });
            progress(&match kept {
                Some(path) => format!(
                    "error: the job ended ({}) but row {id} could not be written ({e}); its result is kept in {path} and is recorded by the next presize run",
                    actuals.outcome
                ),
                None => format!(
                    "error: the job ended ({}) but its result could not be recorded in row {id}: {e}",
                    actuals.outcome
                ),
            });
            return Ok(Recorded::Unrecorded);
        }
        if actuals.outcome == Outcome::Ok && actuals.oom_events > 0 {
            progress(&format!(
                "warning: the kernel OOM-killed {} process(es) inside the job at its {} MB cap, \
                 but its main process exited 0: recorded as ok with oom_events = {}",
                actuals.oom_events, a.limits.memory_limit_mb, actuals.oom_events
            ));
        }
        progress(&format!(
            "attempt {}: {} — peak {:.1} MB, cpu {:.2} s, wall {:.2} s ({})",
            a.number,
            actuals.outcome,
            actuals.peak_rss_mb.unwrap_or(0.0),
            actuals.cpu_s.unwrap_or(0.0),
            actuals.wall_s,
            actuals.measure_source
        ));
        Ok(Recorded::Settled { next_row: None })
    }

    fn report(&self, row: i64, a: &Attempt, end: LocalEnd) -> AttemptReport {
        AttemptReport {
            row_id: row,
            attempt: a.number,
            applied: a.limits,
            actuals: end.actuals,
        }
    }
}
