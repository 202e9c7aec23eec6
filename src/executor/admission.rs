//! Admission: a reservation ledger in SQLite shared by every `presize run` on a host.
//!
//! A job reserves its memory cap before it starts and waits while the running reservations
//! plus its cap exceed the host budget. Waiters start in priority order (high, normal, low),
//! first come first served within a priority; only the head of the queue may start, so a
//! stream of small jobs cannot starve a big one. Reservations of dead processes are reclaimed
//! by whoever looks next.
//!
//! This is the policy; the ledger's SQL sits beside its table in `store::admission`.

use std::time::{Duration, Instant};

use crate::job::Priority;
use crate::store::{
    HeadView, LedgerState, NewReservation, ReservationHolder, Staleness, Store, StoreError,
};

/// Errors of admission.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("waited {waited_s:.0} s for {memory_mb} MB of the {budget_mb} MB host budget (--queue-timeout); try again later or raise PRESIZE_HOST_BUDGET_MB")]
    QueueTimeout {
        waited_s: f64,
        memory_mb: u64,
        budget_mb: u64,
    },
    #[error("a reservation of {0} MB does not fit the ledger (largest: {max} MB)", max = i64::MAX)]
    TooLarge(u64),
    #[error("interrupted by signal {0} while waiting for memory")]
    Interrupted(i32),
    #[error(transparent)]
    Burst(#[from] super::burst::BurstError),
}

/// Milliseconds since the epoch (waiter heartbeats).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A waiter whose heartbeat is older than this many of its own polls (and at least
/// [`STALE_MIN_MS`]) has stopped polling (SIGSTOP, frozen): it keeps its reservation but not
/// its place at the head of the queue until it polls again.
const STALE_POLLS: i64 = 5;
/// Lower bound of the staleness threshold, milliseconds.
const STALE_MIN_MS: i64 = 2_000;

/// Admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub budget_mb: u64,
    /// Sum of caps may reach `burst_factor` × budget while the sum of predicted peaks stays
    /// within the budget. 1.0 = off.
    pub burst_factor: f64,
    /// The automatic burst rule (`None` = off); a burst in force raises the factor above.
    pub auto_burst: Option<super::burst::AutoBurst>,
    /// Give up waiting after this long (`None` = wait forever).
    pub queue_timeout: Option<Duration>,
    /// How often to look again while waiting.
    pub poll: Duration,
}

/// A held reservation; released by [`Admission::release`] (or reclaimed after a crash).
#[derive(Debug)]
pub struct Reservation {
    pub id: i64,
    pub waited: Duration,
}

/// Priority as stored (lower runs first).
fn prio(p: Priority) -> i64 {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// The ledger's policy over the store's `reservation` table.
pub struct Admission<'s> {
    store: &'s mut Store,
    host: String,
    cfg: AdmissionConfig,
}

/// Whether a reservation's holder is proven gone, as seen from this process (a holder in
/// another PID namespace is not: its reservation stays).
fn holder_dead(h: &ReservationHolder) -> bool {
    let me = super::owner::Identity::current();
    let pidns = h.pidns.and_then(|n| u64::try_from(n).ok());
    super::owner::liveness(me, h.boot_id.as_deref(), pidns, h.pid, h.pid_start)
        == super::owner::Liveness::Dead
}

impl<'s> Admission<'s> {
    pub fn new(store: &'s mut Store, host: String, cfg: AdmissionConfig) -> Self {
        Self { store, host, cfg }
    }

    /// Remove reservations whose presize process is gone. Returns how many.
    pub fn reclaim_dead(&mut self) -> Result<usize, AdmissionError> {
        Ok(self.store.reclaim_reservations(&self.host, &holder_dead)?)
    }

    /// Reserve `memory_mb` and wait until it fits in the budget; `status` is called with a
    /// one-line message when the job has to wait (and again every ~10 s).
    pub fn acquire(
        &mut self,
        row_id: Option<i64>,
        memory_mb: u64,
        predicted_mb: f64,
        priority: Priority,
        status: &mut dyn FnMut(&str),
    ) -> Result<Reservation, AdmissionError> {
        let me = super::owner::Identity::current();
        let pid = me.pid;
        let start = me.start_ticks.and_then(|v| i64::try_from(v).ok());
        let memory = i64::try_from(memory_mb).map_err(|_| AdmissionError::TooLarge(memory_mb))?;
        let poll_ms = i64::try_from(self.cfg.poll.as_millis()).unwrap_or(i64::MAX);
        if let Some(sig) = super::signals::pending() {
            return Err(AdmissionError::Interrupted(sig));
        }
        let id = self.store.reserve(&NewReservation {
            row_id,
            host: &self.host,
            pid,
            pid_start: start,
            boot_id: me.boot_id.as_deref(),
            pidns: me.pidns.and_then(|n| i64::try_from(n).ok()),
            memory_mb: memory,
            predicted_mb: if predicted_mb.is_finite() {
                predicted_mb
            } else {
                memory_mb as f64
            },
            priority: prio(priority),
            heartbeat_ms: now_ms(),
            poll_ms,
        })?;
        let t0 = Instant::now();
        let mut last_status: Option<Instant> = None;
        loop {
            match self.try_admit(id, memory_mb) {
                Ok(Some(_)) => {
                    return Ok(Reservation {
                        id,
                        waited: t0.elapsed(),
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = self.release_id(id);
                    return Err(e);
                }
            }
            if let Some(limit) = self.cfg.queue_timeout {
                if t0.elapsed() >= limit {
                    let _ = self.release_id(id);
                    return Err(AdmissionError::QueueTimeout {
                        waited_s: t0.elapsed().as_secs_f64(),
                        memory_mb,
                        budget_mb: self.cfg.budget_mb,
                    });
                }
            }
            if last_status.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                let s = self.state().unwrap_or_default();
                status(&format!(
                    "waiting for memory: {memory_mb} MB needed, {} of {} MB reserved by {} running job(s), {} waiting",
                    s.running_mb, self.cfg.budget_mb, s.running, s.waiting
                ));
                last_status = Some(Instant::now());
            }
            if let Some(sig) = super::signals::sleep_unless_signalled(self.cfg.poll) {
                let _ = self.release_id(id);
                return Err(AdmissionError::Interrupted(sig));
            }
        }
    }

    /// One admission check; `Some(())` when admitted.
    fn try_admit(&mut self, id: i64, memory_mb: u64) -> Result<Option<()>, AdmissionError> {
        let budget = self.cfg.budget_mb as f64;
        let (host, cfg) = (&self.host, &self.cfg);
        let admitted = self.store.admission_step(
            id,
            host,
            now_ms(),
            Staleness {
                polls: STALE_POLLS,
                min_ms: STALE_MIN_MS,
            },
            &holder_dead,
            &mut |tx, v: &HeadView| -> Result<bool, AdmissionError> {
                let caps = v.running_mb + memory_mb as f64;
                let burst_factor = super::burst::factor_in_force(
                    tx,
                    host,
                    cfg.burst_factor,
                    cfg.auto_burst.as_ref(),
                    super::burst::Demand {
                        id,
                        caps_mb: caps,
                        budget_mb: budget,
                    },
                )?;
                Ok(v.running == 0
                    || caps <= budget
                    || (burst_factor > 1.0
                        && caps <= budget * burst_factor
                        && v.running_predicted_mb + v.predicted_mb <= budget))
            },
        )?;
        Ok(admitted.then_some(()))
    }

    /// Release a reservation after the job ended.
    pub fn release(&mut self, r: Reservation) -> Result<(), AdmissionError> {
        self.release_id(r.id)
    }

    fn release_id(&mut self, id: i64) -> Result<(), AdmissionError> {
        Ok(self.store.release_reservation(id)?)
    }

    /// What is reserved on this host now.
    pub fn state(&self) -> Result<LedgerState, AdmissionError> {
        Ok(self.store.ledger_state(&self.host)?)
    }
}
