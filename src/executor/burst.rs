//! Burst mode: periods in which admission lets the sum of *caps* of running jobs exceed the
//! host budget by a factor, while the sum of their *predicted peaks* still fits the budget.
//!
//! A burst is a row of the `burst` table: who started it, when, why, the factor and when it
//! ends by itself. `presize burst` starts and ends manual bursts; the `[admission]
//! auto_burst` rule starts one when the queue (the head has waited `auto_burst_after_s`) or
//! the newest recorded forecast (predicted peak over the budget) says demand exceeds the
//! budget, ends it early once the queue's demand fits the budget again, caps it at
//! `auto_burst_max_s` and starts no new one within `auto_burst_cool_down_s` of the last end.

use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::util::{now_rfc3339, rfc3339};

/// Largest burst factor accepted (caps may reach this × the budget).
pub(crate) const MAX_FACTOR: f64 = 4.0;
/// Longest manual burst accepted (a week).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors of burst mode.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BurstError {
    #[error("database error while {what}: {source}")]
    Db {
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("burst factor {0} is not a number in (1, {MAX_FACTOR}]")]
    Factor(f64),
    #[error("burst duration {0:?} is not in (0 s, 7 days]")]
    Duration(Duration),
}

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BurstError {
    move |source| BurstError::Db { what, source }
}

/// The automatic burst rule (`[admission] auto_burst = true`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoBurst {
    pub factor: f64,
    /// An automatic burst ends by itself after this long.
    pub max_duration: Duration,
    /// No automatic burst starts within this long of the end of the last burst.
    pub cool_down: Duration,
    /// The queue says demand exceeds the budget once its head has waited this long.
    pub after_wait: Duration,
}

/// One burst period, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstRecord {
    pub id: i64,
    pub host: String,
    pub factor: f64,
    /// `manual` or `auto`.
    pub source: String,
    pub who: String,
    pub why: String,
    pub started_at: String,
    /// When it ends by itself.
    pub until: String,
    /// When it was ended early (`burst --off`, or demand back within the budget).
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
}

impl BurstRecord {
    /// When it ended or ends: `ended_at` if ended early, else `until`.
    pub fn end(&self) -> &str {
        self.ended_at.as_deref().unwrap_or(&self.until)
    }
}

const COLUMNS: &str = "id, host, factor, source, who, why, started_at, until, ended_at, end_reason";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BurstRecord> {
    Ok(BurstRecord {
        id: r.get(0)?,
        host: r.get(1)?,
        factor: r.get(2)?,
        source: r.get(3)?,
        who: r.get(4)?,
        why: r.get(5)?,
        started_at: r.get(6)?,
        until: r.get(7)?,
        ended_at: r.get(8)?,
        end_reason: r.get(9)?,
    })
}

/// The burst in force, by the (host, until) index.
pub(crate) const ACTIVE_SQL: &str = "SELECT id, host, factor, source, who, why, started_at, until,
        ended_at, end_reason
    FROM burst WHERE host = ?1 AND until > ?2 AND ended_at IS NULL ORDER BY id DESC LIMIT 1";

/// The burst in force on `host` at `now` (RFC 3339 as written by [`rfc3339`]), if any.
pub fn active(conn: &Connection, host: &str, now: &str) -> Result<Option<BurstRecord>, BurstError> {
    conn.query_row(ACTIVE_SQL, params![host, now], from_row)
        .optional()
        .map_err(db("reading the burst in force"))
}

/// The last `n` bursts of `host`, newest first.
pub fn recent(conn: &Connection, host: &str, n: usize) -> Result<Vec<BurstRecord>, BurstError> {
    let mut st = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM burst WHERE host = ?1 ORDER BY id DESC LIMIT ?2"
        ))
        .map_err(db("reading bursts"))?;
    let rows = st
        .query_map(params![host, n as i64], from_row)
        .map_err(db("reading bursts"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading bursts"))?;
    Ok(rows)
}

/// The last `n` bursts of every host, newest first.
pub fn all_recent(conn: &Connection, n: usize) -> Result<Vec<BurstRecord>, BurstError> {
    let mut st = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM burst ORDER BY id DESC LIMIT ?1"
        ))
        .map_err(db("reading bursts"))?;
    let rows = st
        .query_map([n as i64], from_row)
        .map_err(db("reading bursts"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading bursts"))?;
    Ok(rows)
}

/// Check a factor and a duration for a burst.
pub fn validate(factor: f64, duration: Duration) -> Result<(), BurstError> {
    if !(factor.is_finite() && factor > 1.0 && factor <= MAX_FACTOR) {
        return Err(BurstError::Factor(factor));
    }
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(BurstError::Duration(duration));
    }
    Ok(())
}

/// Start a burst on `host` now for `duration`, ending any burst in force. Returns it.
pub fn start(
    conn: &mut Connection,
    host: &str,
    factor: f64,
    duration: Duration,
    (source, who, why): (&str, &str, &str),
) -> Result<BurstRecord, BurstError> {
    validate(factor, duration)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db("starting a write"))?;
    let now = SystemTime::now();
    let id = insert(&tx, host, factor, now, duration, (source, who, why))?;
    let rec = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM burst WHERE id = ?1"),
            [id],
            from_row,
        )
        .map_err(db("reading a burst"))?;
    tx.commit().map_err(db("committing a burst"))?;
    Ok(rec)
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    factor: f64,
    now: SystemTime,
    duration: Duration,
    (source, who, why): (&str, &str, &str),
) -> Result<i64, BurstError> {
    let now_s = rfc3339(now);
    end_in(tx, host, &now_s, "replaced by a new burst")?;
    tx.execute(
        "INSERT INTO burst (host, factor, source, who, why, started_at, until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            host,
            factor,
            source,
            who,
            why,
            now_s,
            rfc3339(now + duration)
        ],
    )
    .map_err(db("recording a burst"))?;
    Ok(tx.last_insert_rowid())
}

fn end_in(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    now: &str,
    reason: &str,
) -> Result<usize, BurstError> {
    tx.execute(
        "UPDATE burst SET ended_at = ?2, end_reason = ?3
         WHERE host = ?1 AND until > ?2 AND ended_at IS NULL",
        params![host, now, reason],
    )
    .map_err(db("ending a burst"))
}

/// End the burst in force on `host` (if any). Returns how many were ended (0 or 1).
pub fn stop(conn: &mut Connection, host: &str, reason: &str) -> Result<usize, BurstError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db("starting a write"))?;
    let n = end_in(&tx, host, &now_rfc3339(), reason)?;
    tx.commit().map_err(db("committing"))?;
    Ok(n)
}

/// What admission knows when it asks for the factor in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Demand {
    /// The reservation asking (the head of the queue).
    pub id: i64,
    /// Caps of the running jobs plus the asker's cap.
    pub caps_mb: f64,
    pub budget_mb: f64,
}

/// The burst factor admission applies now: the largest of the configured static factor and
/// the burst in force. Inside admission's write transaction, also runs the automatic rule:
/// ends an automatic burst once running + waiting caps fit the budget, starts one when the
/// head cannot start within the budget and the queue or the newest forecast says demand
/// exceeds it (outside the cool-down).
pub(crate) fn factor_in_force(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    static_factor: f64,
    auto: Option<&AutoBurst>,
    d: Demand,
) -> Result<f64, BurstError> {
    let now = SystemTime::now();
    let now_s = rfc3339(now);
    let mut current = active(tx, host, &now_s)?;
    if let Some(rule) = auto {
        // total() sums as REAL: no integer overflow whatever the reservations.
        let queue_mb: f64 = tx
            .query_row(
                "SELECT total(memory_mb) FROM reservation WHERE host = ?1",
                [host],
                |r| r.get(0),
            )
            .map_err(db("summing reservations"))?;
        match &current {
            Some(b) if b.source == "auto" && queue_mb <= d.budget_mb => {
                end_in(tx, host, &now_s, "demand back within the budget")?;
                current = None;
            }
            Some(_) => {}
            None if d.caps_mb > d.budget_mb => {
                if let Some(why) = pressure(tx, host, rule, d, now, queue_mb)? {
                    if !cooling_down(tx, host, rule, now)? {
                        let id = insert(
                            tx,
                            host,
                            rule.factor,
                            now,
                            rule.max_duration,
                            ("auto", "auto", &why),
                        )?;
                        current = tx
                            .query_row(
                                &format!("SELECT {COLUMNS} FROM burst WHERE id = ?1"),
                                [id],
                                from_row,
                            )
                            .optional()
                            .map_err(db("reading a burst"))?;
                    }
                }
            }
            None => {}
        }
    }
    let burst = current.map_or(1.0, |b| b.factor);
    Ok(static_factor.max(burst))
}

/// Why demand exceeds the budget, if it does: the head waited long enough, or the newest
/// forecast in force predicts a peak over the budget.
fn pressure(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    rule: &AutoBurst,
    d: Demand,
    now: SystemTime,
    queue_mb: f64,
) -> Result<Option<String>, BurstError> {
    let created: Option<String> = tx
        .query_row(
            "SELECT created_at FROM reservation WHERE id = ?1 AND host = ?2",
            params![d.id, host],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("reading a reservation"))?;
    let waited = created
        .and_then(|c| humantime::parse_rfc3339_weak(&c).ok())
        .and_then(|c| now.duration_since(c).ok())
        .unwrap_or_default();
    if waited >= rule.after_wait {
        return Ok(Some(format!(
            "queue: the head waited {:.0} s; {:.0} MB running + waiting of a {:.0} MB budget",
            waited.as_secs_f64(),
            queue_mb,
            d.budget_mb
        )));
    }
    let now_s = rfc3339(now);
    let fc: Option<(f64, f64, String)> = tx
        .query_row(
            "SELECT peak_concurrent_mb, horizon_hours, made_at FROM forecast_record
             WHERE made_at <= ?1 AND target_end > ?1 ORDER BY made_at DESC, id DESC LIMIT 1",
            [&now_s],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db("reading the newest forecast"))?;
    Ok(fc
        .filter(|(peak, _, _)| *peak > d.budget_mb)
        .map(|(peak, h, made)| {
            format!(
                "forecast of {made}: peak {peak:.0} MB over the next {h} h exceeds the {:.0} MB budget",
                d.budget_mb
            )
        }))
}

fn cooling_down(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    rule: &AutoBurst,
    now: SystemTime,
) -> Result<bool, BurstError> {
    let last_end: Option<String> = tx
        .query_row(
            "SELECT coalesce(ended_at, until) FROM burst WHERE host = ?1 ORDER BY id DESC LIMIT 1",
            [host],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("reading the last burst"))?;
    Ok(last_end
        .and_then(|e| humantime::parse_rfc3339_weak(&e).ok())
        .is_some_and(|end| {
            now.duration_since(end)
                .map_or(true, |since| since < rule.cool_down)
        }))
}

/// Parse a duration such as `90s`, `15m`, `2h`, `1h30m`, `1.5h` or a plain number of
/// seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    // A decimal number with one unit, e.g. 1.5h.
    let split = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = t.split_at(split);
    if let Ok(v) = num.parse::<f64>() {
        let mult = match unit {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            _ => return humantime::parse_duration(t).ok(),
        };
        return Duration::try_from_secs_f64(v * mult).ok();
    }
    humantime::parse_duration(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        for bad in ["", "x", "-1", "2q", "nan"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn factors_and_durations_are_checked() {
        let d = Duration::from_secs(60);
        for bad in [1.0, 0.5, f64::NAN, f64::INFINITY, 4.5] {
            assert!(validate(bad, d).is_err(), "{bad}");
        }
        assert!(validate(1.5, Duration::ZERO).is_err());
        assert!(validate(1.5, MAX_DURATION + Duration::from_secs(1)).is_err());
        assert!(validate(1.5, d).is_ok());
    }
}
