//! The host's reservation ledger (the `reservation` table, migration V2): the SQL of
//! admission. Who may start and the burst rule are admission's policy
//! (`executor::admission`); it reaches the table only through these methods.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{q, Store, StoreError};
use crate::util::now_rfc3339;

/// A reservation to record as waiting.
#[derive(Debug, Clone)]
pub(crate) struct NewReservation<'a> {
    /// The `resource_prediction` row it is for, if any.
    pub row_id: Option<i64>,
    pub host: &'a str,
    /// The holder: pid, its start time, boot id and PID namespace (see `executor::owner`).
    pub pid: u32,
    pub pid_start: Option<i64>,
    pub boot_id: Option<&'a str>,
    pub pidns: Option<i64>,
    pub memory_mb: i64,
    pub predicted_mb: f64,
    /// Lower starts first.
    pub priority: i64,
    /// Milliseconds since the epoch of the holder's latest poll.
    pub heartbeat_ms: i64,
    /// How often the holder polls, milliseconds.
    pub poll_ms: i64,
}

/// The owner of a reservation, as recorded (for the caller's liveness check).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReservationHolder {
    pub id: i64,
    pub pid: i64,
    pub pid_start: Option<i64>,
    pub boot_id: Option<String>,
    pub pidns: Option<i64>,
}

/// A snapshot of what holds and waits for memory on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState {
    pub running_mb: u64,
    pub running_predicted_mb: f64,
    pub running: usize,
    pub waiting: usize,
}

/// What the head of the queue sees inside its admission transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HeadView {
    /// Sum of the caps of the running reservations, MiB.
    pub running_mb: f64,
    /// Sum of their predicted peaks, MiB.
    pub running_predicted_mb: f64,
    /// How many are running.
    pub running: i64,
    /// The head's own predicted peak, MiB.
    pub predicted_mb: f64,
}

/// When a waiter counts as stalled: its heartbeat is older than `polls` of its own polls and
/// at least `min_ms`. A stalled waiter keeps its reservation but not its place at the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Staleness {
    pub polls: i64,
    pub min_ms: i64,
}

fn reclaim_in(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    is_dead: &dyn Fn(&ReservationHolder) -> bool,
) -> Result<usize, StoreError> {
    let holders: Vec<ReservationHolder> = {
        let mut st = tx
            .prepare("SELECT id, pid, pid_start, boot_id, pidns FROM reservation WHERE host = ?1")
            .map_err(q("reading reservations"))?;
        let rows = st
            .query_map([host], |r| {
                Ok(ReservationHolder {
                    id: r.get(0)?,
                    pid: r.get(1)?,
                    pid_start: r.get(2)?,
                    boot_id: r.get(3)?,
                    pidns: r.get(4)?,
                })
            })
            .map_err(q("reading reservations"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading reservations"))?;
        rows
    };
    let mut n = 0;
    for h in holders.iter().filter(|h| is_dead(h)) {
        n += tx
            .execute("DELETE FROM reservation WHERE id = ?1", [h.id])
            .map_err(q("reclaiming a reservation"))?;
    }
    Ok(n)
}

impl Store {
    /// Record a waiting reservation; returns its id.
    pub(crate) fn reserve(&mut self, r: &NewReservation<'_>) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        tx.execute(
            "INSERT INTO reservation (row_id, host, pid, pid_start, memory_mb, predicted_mb,
                priority, state, created_at, boot_id, pidns, heartbeat_ms, poll_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'waiting', ?8, ?9, ?10, ?11, ?12)",
            params![
                r.row_id,
                r.host,
                r.pid,
                r.pid_start,
                r.memory_mb,
                r.predicted_mb,
                r.priority,
                now_rfc3339(),
                r.boot_id,
                r.pidns,
                r.heartbeat_ms,
                r.poll_ms
            ],
        )
        .map_err(q("reserving memory"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(q("committing a reservation"))?;
        Ok(id)
    }

    /// Remove the reservations of `host` whose holder `is_dead`. Returns how many.
    pub(crate) fn reclaim_reservations(
        &mut self,
        host: &str,
        is_dead: &dyn Fn(&ReservationHolder) -> bool,
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        let n = reclaim_in(&tx, host, is_dead)?;
        tx.commit().map_err(q("committing"))?;
        Ok(n)
    }

    /// One admission check of reservation `id`, in one write transaction: reclaim the dead
    /// holders of `host`, record the heartbeat `now_ms`, and if `id` heads the queue
    /// (priority, then arrival; stalled waiters skipped) ask `decide` whether it may start
    /// given the running reservations. `decide` runs inside the transaction (the burst rule
    /// reads and writes its own table there); an error from it rolls everything back.
    /// Returns whether `id` was admitted (its state is then `running`).
    pub(crate) fn admission_step<E: From<StoreError>>(
        &mut self,
        id: i64,
        host: &str,
        now_ms: i64,
        stale: Staleness,
        is_dead: &dyn Fn(&ReservationHolder) -> bool,
        decide: &mut dyn FnMut(&rusqlite::Transaction<'_>, &HeadView) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        reclaim_in(&tx, host, is_dead)?;
        tx.execute(
            "UPDATE reservation SET heartbeat_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )
        .map_err(q("recording a heartbeat"))?;
        // Waiters that stopped polling do not hold the head of the queue.
        let head: Option<i64> = tx
            .query_row(
                "SELECT id FROM reservation WHERE host = ?1 AND state = 'waiting'
                   AND (heartbeat_ms IS NULL
                        OR heartbeat_ms >= ?2 - max(?3, ?4 * coalesce(poll_ms, 0)))
                 ORDER BY priority, id LIMIT 1",
                params![host, now_ms, stale.min_ms, stale.polls],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("reading the queue"))?;
        if head != Some(id) {
            tx.commit().map_err(q("committing"))?;
            return Ok(false);
        }
        // total() sums as REAL: an absurd reservation cannot make every later run fail with
        // "integer overflow" (and caps are bounded when stored).
        let (running_mb, running_predicted_mb, running): (f64, f64, i64) = tx
            .query_row(
                "SELECT total(memory_mb), total(predicted_mb), count(*)
                 FROM reservation WHERE host = ?1 AND state = 'running'",
                [host],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(q("summing reservations"))?;
        let predicted_mb: f64 = tx
            .query_row(
                "SELECT predicted_mb FROM reservation WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(q("reading a reservation"))?;
        let view = HeadView {
            running_mb,
            running_predicted_mb,
            running,
            predicted_mb,
        };
        let admit = decide(&tx, &view)?;
        if admit {
            tx.execute(
                "UPDATE reservation SET state = 'running', admitted_at = ?2 WHERE id = ?1",
                params![id, now_rfc3339()],
            )
            .map_err(q("admitting"))?;
        }
        tx.commit().map_err(q("committing"))?;
        Ok(admit)
    }

    /// Remove a reservation (the job ended, or gave up waiting).
    pub(crate) fn release_reservation(&mut self, id: i64) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        tx.execute("DELETE FROM reservation WHERE id = ?1", [id])
            .map_err(q("releasing a reservation"))?;
        tx.commit().map_err(q("committing"))
    }

    /// What is reserved on `host` now.
    pub(crate) fn ledger_state(&self, host: &str) -> Result<LedgerState, StoreError> {
        self.conn
            .query_row(
                "SELECT total(CASE WHEN state='running' THEN memory_mb END),
                        total(CASE WHEN state='running' THEN predicted_mb END),
                        count(CASE WHEN state='running' THEN 1 END),
                        count(CASE WHEN state='waiting' THEN 1 END)
                 FROM reservation WHERE host = ?1",
                [host],
                |r| {
                    Ok(LedgerState {
                        running_mb: r.get::<_, f64>(0)?.max(0.0) as u64,
                        running_predicted_mb: r.get(1)?,
                        running: r.get::<_, i64>(2)? as usize,
                        waiting: r.get::<_, i64>(3)? as usize,
                    })
                },
            )
            .map_err(q("reading the ledger"))
    }
}
