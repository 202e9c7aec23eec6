//! Admission: a reservation ledger in SQLite shared by every `presize run` on a host.
//!
//! A job reserves its memory cap before it starts and waits while the running reservations
//! plus its cap exceed the host budget. Waiters start in priority order (high, normal, low),
//! first come first served within a priority; only the head of the queue may start, so a
//! stream of small jobs cannot starve a big one. Reservations of dead processes are reclaimed
//! by whoever looks next.

use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::job::Priority;
use crate::util::now_rfc3339;

/// Errors of admission.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("database error while {what}: {source}")]
    Db {
        what: &'static str,
        source: rusqlite::Error,
    },
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

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> AdmissionError {
    move |source| AdmissionError::Db { what, source }
}

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

/// The ledger, over an open connection to the presize database.
pub struct Admission<'c> {
    conn: &'c mut Connection,
    host: String,
    cfg: AdmissionConfig,
}

/// A snapshot of what holds and waits for memory on this host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState {
    pub running_mb: u64,
    pub running_predicted_mb: f64,
    pub running: usize,
    pub waiting: usize,
}

impl<'c> Admission<'c> {
    pub fn new(conn: &'c mut Connection, host: String, cfg: AdmissionConfig) -> Self {
        Self { conn, host, cfg }
    }

    /// Remove reservations whose presize process is gone. Returns how many.
    pub fn reclaim_dead(&mut self) -> Result<usize, AdmissionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting a write"))?;
        let n = reclaim(&tx, &self.host)?;
        tx.commit().map_err(db("committing"))?;
        Ok(n)
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
        let id =
            {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db("starting a write"))?;
                tx.execute(
                "INSERT INTO reservation (row_id, host, pid, pid_start, memory_mb, predicted_mb,
                    priority, state, created_at, boot_id, pidns, heartbeat_ms, poll_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'waiting', ?8, ?9, ?10, ?11, ?12)",
                params![
                    row_id,
                    self.host,
                    pid,
                    start,
                    memory,
                    if predicted_mb.is_finite() { predicted_mb } else { memory_mb as f64 },
                    prio(priority),
                    now_rfc3339(),
                    me.boot_id,
                    me.pidns.and_then(|n| i64::try_from(n).ok()),
                    now_ms(),
                    poll_ms
                ],
            )
            .map_err(db("reserving memory"))?;
                let id = tx.last_insert_rowid();
                tx.commit().map_err(db("committing a reservation"))?;
                id
            };
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting a write"))?;
        reclaim(&tx, &self.host)?;
        let now = now_ms();
        tx.execute(
            "UPDATE reservation SET heartbeat_ms = ?2 WHERE id = ?1",
            params![id, now],
        )
        .map_err(db("recording a heartbeat"))?;
        // Waiters that stopped polling do not hold the head of the queue.
        let head: Option<i64> = tx
            .query_row(
                "SELECT id FROM reservation WHERE host = ?1 AND state = 'waiting'
                   AND (heartbeat_ms IS NULL
                        OR heartbeat_ms >= ?2 - max(?3, ?4 * coalesce(poll_ms, 0)))
                 ORDER BY priority, id LIMIT 1",
                params![&self.host, now, STALE_MIN_MS, STALE_POLLS],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("reading the queue"))?;
        if head != Some(id) {
            tx.commit().map_err(db("committing"))?;
            return Ok(None);
        }
        // total() sums as REAL: an absurd reservation cannot make every later run fail with
        // "integer overflow" (and caps are bounded when stored).
        let (running_mb, running_pred, n_running): (f64, f64, i64) = tx
            .query_row(
                "SELECT total(memory_mb), total(predicted_mb), count(*)
                 FROM reservation WHERE host = ?1 AND state = 'running'",
                [&self.host],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(db("summing reservations"))?;
        let my_pred: f64 = tx
            .query_row(
                "SELECT predicted_mb FROM reservation WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(db("reading a reservation"))?;
        let budget = self.cfg.budget_mb as f64;
        let caps = running_mb + memory_mb as f64;
        let burst_factor = super::burst::factor_in_force(
            &tx,
            &self.host,
            self.cfg.burst_factor,
            self.cfg.auto_burst.as_ref(),
            super::burst::Demand {
                id,
                caps_mb: caps,
                budget_mb: budget,
            },
        )?;
        let fits = n_running == 0
            || caps <= budget
            || (burst_factor > 1.0
                && caps <= budget * burst_factor
                && running_pred + my_pred <= budget);
        if fits {
            tx.execute(
                "UPDATE reservation SET state = 'running', admitted_at = ?2 WHERE id = ?1",
                params![id, now_rfc3339()],
            )
            .map_err(db("admitting"))?;
        }
        tx.commit().map_err(db("committing"))?;
        Ok(fits.then_some(()))
    }

    /// Release a reservation after the job ended.
    pub fn release(&mut self, r: Reservation) -> Result<(), AdmissionError> {
        self.release_id(r.id)
    }

    fn release_id(&mut self, id: i64) -> Result<(), AdmissionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting a write"))?;
        tx.execute("DELETE FROM reservation WHERE id = ?1", [id])
            .map_err(db("releasing a reservation"))?;
        tx.commit().map_err(db("committing"))
    }

    /// What is reserved on this host now.
    pub fn state(&self) -> Result<LedgerState, AdmissionError> {
        self.conn
            .query_row(
                "SELECT total(CASE WHEN state='running' THEN memory_mb END),
                        total(CASE WHEN state='running' THEN predicted_mb END),
                        count(CASE WHEN state='running' THEN 1 END),
                        count(CASE WHEN state='waiting' THEN 1 END)
                 FROM reservation WHERE host = ?1",
                [&self.host],
                |r| {
                    Ok(LedgerState {
                        running_mb: r.get::<_, f64>(0)?.max(0.0) as u64,
                        running_predicted_mb: r.get(1)?,
                        running: r.get::<_, i64>(2)? as usize,
                        waiting: r.get::<_, i64>(3)? as usize,
                    })
                },
            )
            .map_err(db("reading the ledger"))
    }
}

fn reclaim(tx: &rusqlite::Transaction<'_>, host: &str) -> Result<usize, AdmissionError> {
    type Holder = (i64, i64, Option<i64>, Option<String>, Option<i64>);
    let holders: Vec<Holder> = {
        let mut st = tx
            .prepare("SELECT id, pid, pid_start, boot_id, pidns FROM reservation WHERE host = ?1")
            .map_err(db("reading reservations"))?;
        let rows = st
            .query_map([host], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(db("reading reservations"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("reading reservations"))?;
        rows
    };
    let mut n = 0;
    let me = super::owner::Identity::current();
    for (id, pid, start, boot, pidns) in holders {
        let pidns = pidns.and_then(|n| u64::try_from(n).ok());
        // Only a holder proven gone is reclaimed (not one in another PID namespace).
        if super::owner::liveness(me, boot.as_deref(), pidns, pid, start)
            == super::owner::Liveness::Dead
        {
            n += tx
                .execute("DELETE FROM reservation WHERE id = ?1", [id])
                .map_err(db("reclaiming a reservation"))?;
        }
    }
    Ok(n)
}
